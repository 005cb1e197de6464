/* The open conversation as a tree of messages, and which branch is shown. No DOM here: a
 * message's element is made and kept by messages.js (`message.el`, `message.parts`).
 *
 * Offsets count code points, as the protocol does (docs/protocol.md). */

export const ROOT = "root"; // tree key of top-level messages

export const state = {
  conversationId: null,
  title: "",
  messages: new Map(), // id → message
  children: new Map(), // parent id or ROOT → [child ids], oldest first
  chosen: new Map(), // parent id or ROOT → the child shown
  pending: new Map(), // client_id → a send / edit / regenerate not acknowledged yet
  conversations: [], // the sidebar list
  renaming: false, // a title is being edited in the sidebar: the list is not redrawn
  loadSeq: 0,
};

export function keyOf(parent) { return parent == null ? ROOT : parent; }

export function cpLength(text) {
  // Code points, as the protocol counts them (a fast path for plain ASCII).
  return /^[\x00-\x7f]*$/.test(text) ? text.length : Array.from(text).length;
}

export function dropCodePoints(text, n) {
  if (n <= 0) return text;
  if (/^[\x00-\x7f]*$/.test(text)) return text.slice(n);
  return Array.from(text).slice(n).join("");
}

export function makeMessage(data) {
  const text = data.content || "";
  return {
    id: data.id,
    parent: data.parent == null ? null : data.parent,
    role: data.role,
    text: text,
    cp: cpLength(text),
    reasoning: data.reasoning || "",
    reasoningCp: cpLength(data.reasoning || ""),
    status: data.status || "complete",
    model: data.model || "",
    usage: data.usage || null,
    error: data.error || null,
    finishReason: data.finish_reason || "",
    attachments: data.attachments || [], // a user message's images and PDFs (the server's JSON)
    toolCalls: data.tool_calls || [], // a reply's stored tool steps (tools.js shows them)
    // Frames carry no time: a message this page saw start is stamped with the page's clock.
    created: data.created ? new Date(data.created) : new Date(),
    resumeAt: 0, // when a resume was last asked for (gap handling)
    regenerating: false,
    el: null,
  };
}

export function addMessage(message) {
  state.messages.set(message.id, message);
  const key = keyOf(message.parent);
  let kids = state.children.get(key);
  if (!kids) state.children.set(key, (kids = []));
  if (kids.indexOf(message.id) < 0) kids.push(message.id);
  return message;
}

/** Forget the open conversation's messages (a new chat, or before loading another). */
export function clearTree() {
  state.messages = new Map();
  state.children = new Map();
  state.chosen = new Map();
}

export function isLive(message) {
  return message.role === "assistant" && (message.status === "streaming" || message.status === "pending");
}

export function liveReply() {
  let found = null;
  state.messages.forEach((m) => { if (!found && isLive(m)) found = m; });
  return found;
}

/** The branch shown: from the root, the chosen (else newest) child at each level. */
export function visiblePath() {
  const path = [];
  let key = ROOT;
  for (;;) {
    const kids = state.children.get(key);
    if (!kids || !kids.length) break;
    let id = state.chosen.get(key);
    if (kids.indexOf(id) < 0) id = kids[kids.length - 1];
    path.push(id);
    key = id;
  }
  return path;
}

export function choosePathTo(id) {
  let message = state.messages.get(id);
  while (message) {
    state.chosen.set(keyOf(message.parent), message.id);
    message = state.messages.get(message.parent);
  }
}

export function leafId() {
  const path = visiblePath();
  return path.length ? path[path.length - 1] : null;
}

/** A message of the open conversation is not acknowledged yet (sending a second one could start
 * a second new conversation). */
export function waitingForAck() {
  let waiting = false;
  state.pending.forEach((p) => {
    if (p.conversation === state.conversationId && !p.error) waiting = true;
  });
  return waiting;
}
