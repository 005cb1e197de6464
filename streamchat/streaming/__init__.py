"""The reply engine: one reply, from admission to its last frame, for every entry point.

- ``engine``: send / regenerate / edit / complete / stop (what front ends call)
- ``plan``: a reply's admission and rows, made in one database trip
- ``reply``: one running reply (upstream in; followers, checkpoints, the final write out) and the
  ``Reply`` handle front ends hold
- ``events`` / ``frames``: the engine's typed events, and the protocol frames made from them
- ``follow``: the follower (coalescing) and the one way to follow a reply from anywhere
- ``hub``: this process's running replies, other workers' requests, the reaper
- ``store`` / ``db``: every database write of a reply, and the threads it runs on
- ``context`` / ``completions``: what is sent upstream
"""
