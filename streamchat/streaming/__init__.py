"""The reply engine: one reply, from request to stored rows, for every entry point.

- ``engine``: send / regenerate / edit / stop (what front ends call)
- ``run``: one running reply (upstream in, followers and checkpoints out)
- ``hub``: this process's running replies, coalescing, channel-layer groups
- ``context``: what is sent upstream
- ``store``: every database write of a reply
"""
