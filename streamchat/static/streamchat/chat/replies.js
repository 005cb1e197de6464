/* What the server's frames mean for the page (docs/protocol.md): acknowledgements, replies
 * starting, deltas appended at their offsets (overlaps dropped, gaps asked for again), replies
 * finishing, usage, title changes and errors, each shown in place. */
import { gettext } from "./i18n.js";
import { announce, els, showComposerError } from "./page.js";
import { saveDraft } from "./draft.js";
import { errorText } from "./text.js";
import {
  markDirty, refreshAllPending, refreshComposer, refreshMessage, refreshPending, renderNow,
  renderThread, showMessageError,
} from "./messages.js";
import {
  adoptConversation, markListStreaming, openConversation, refreshList, retitle, touchListItem,
} from "./conversations.js";
import { endSteps, noteToolFrame } from "./tools.js";
import { askResume, dropConnection, markLoggedOut, sendFrame, socket } from "./socket.js";
import {
  addMessage, choosePathTo, cpLength, dropCodePoints, isLive, makeMessage, state,
} from "./tree.js";

/** The socket said hello (again): follow the open conversation, resume every streaming reply
 * from the offset held, and send again every message not acknowledged yet. */
export function onOpened() {
  if (state.conversationId != null) {
    sendFrame({ type: "subscribe", conversation: state.conversationId });
  }
  state.messages.forEach((m) => { if (isLive(m)) askResume(m, true); });
  // Not acknowledged yet: send again with the same client_id (the server answers a repeat
  // with the existing ids, so nothing is stored twice).
  state.pending.forEach((p) => { if (!p.error) sendFrame(p.frame); });
  refreshAllPending();
}

export function handleFrame(frame) {
  switch (frame.type) {
    case "ack": return onAck(frame);
    case "reply.started": return onReplyStarted(frame);
    case "delta": return onDelta(frame, false);
    case "reasoning": return onDelta(frame, true);
    case "reply.finished": return onReplyFinished(frame);
    case "reply.usage": return onReplyUsage(frame);
    case "conversation.updated": return onConversationUpdated(frame);
    case "tool.call": case "tool.result": case "tool.confirm": return onToolFrame(frame);
    case "error": return onError(frame);
    default: return undefined; // pong and anything newer
  }
}

function onAck(frame) {
  const pending = state.pending.get(frame.client_id);
  if (!pending) return;
  state.pending.delete(frame.client_id);
  if (pending.kind === "send" && !els.input.value) saveDraft("");
  const isNew = pending.conversation == null;
  if (isNew && state.conversationId == null) {
    adoptConversation(frame.conversation);
    // Messages refused earlier in this new chat belong to it now: they stay in its thread, and
    // Retry sends them into it.
    state.pending.forEach((p) => {
      if (p.conversation == null && p.error) { p.conversation = frame.conversation; p.frame.conversation = frame.conversation; }
    });
  }
  if (frame.conversation !== state.conversationId) { refreshList(); return; }
  if (pending.kind !== "regenerate" && !state.messages.has(frame.message)) {
    addMessage(makeMessage({ id: frame.message, parent: pending.parent, role: "user", content: pending.content, attachments: pending.attachments }));
  }
  if (pending.kind === "regenerate") {
    const old = state.messages.get(pending.reply);
    if (old) { old.regenerating = false; refreshMessage(old); }
  }
  if (frame.reply != null && !state.messages.has(frame.reply)) {
    addMessage(makeMessage({ id: frame.reply, parent: frame.message, role: "assistant", status: "pending", model: pending.model }));
  }
  choosePathTo(frame.reply != null ? frame.reply : frame.message);
  const reply = state.messages.get(frame.reply);
  renderThread();
  if (reply && !isLive(reply)) refreshMessage(reply);
  if (isNew) refreshList(); else touchListItem(state.conversationId);
}

function onReplyStarted(frame) {
  if (frame.conversation !== state.conversationId) { markListStreaming(frame.conversation, true); return; }
  let reply = state.messages.get(frame.reply);
  if (!reply) {
    // Started here or in another tab: hold its deltas from offset 0 at once.
    reply = addMessage(makeMessage({ id: frame.reply, parent: frame.parent, role: "assistant", status: "streaming" }));
    if (frame.parent != null && !state.messages.has(frame.parent)) {
      // ... on a message this page has not seen (sent from another tab): reload the tree,
      // keeping the text this page already holds.
      openConversation(state.conversationId, { keep: true });
      return;
    }
    choosePathTo(reply.id);
  }
  if (reply.status === "pending") reply.status = "streaming";
  if (frame.model) reply.model = frame.model;
  renderThread();
  announce(gettext("Reply started"));
}

function onDelta(frame, isReasoning) {
  const message = state.messages.get(frame.reply);
  if (!message || message.role !== "assistant" || typeof frame.text !== "string") return;
  const held = isReasoning ? message.reasoningCp : message.cp;
  const offset = Number(frame.offset) || 0;
  if (offset > held) {
    if (!isReasoning) askResume(message, false); // a gap: ask for the text from what we hold
    return;
  }
  const text = offset < held ? dropCodePoints(frame.text, held - offset) : frame.text;
  if (!text) return;
  if (isReasoning) {
    message.reasoning += text;
    message.reasoningCp += cpLength(text);
  } else {
    message.text += text;
    message.cp += cpLength(text);
    message.resumeAt = 0;
  }
  if (message.status === "pending") {
    message.status = "streaming";
    refreshMessage(message);
  }
  markDirty(message);
}

function onReplyFinished(frame) {
  const message = state.messages.get(frame.reply);
  if (!message) { refreshList(); return; }
  const length = Number(frame.length);
  if (isFinite(length) && length > message.cp && (message.finishRetries || 0) < 3) {
    // Text is missing (a gap before the end): fetch it; the resumed stream ends with a new finish.
    message.finishRetries = (message.finishRetries || 0) + 1;
    askResume(message, true);
    return;
  }
  if (isFinite(length) && length < message.cp) {
    message.text = Array.from(message.text).slice(0, length).join("");
    message.cp = length;
  }
  message.status = frame.status || "complete";
  message.finishReason = frame.finish_reason || "";
  if (frame.model) message.model = frame.model;
  if (frame.usage) message.usage = frame.usage;
  message.error = frame.error || null;
  endSteps(message);
  renderNow(message);
  refreshMessage(message);
  renderThread();
  if (message.status === "complete") announce(gettext("Reply finished"));
  else if (message.status === "stopped") announce(gettext("Reply stopped"));
  else announce(message.parts ? message.parts.error.textContent : gettext("The reply failed"));
  refreshList();
}

function onToolFrame(frame) {
  const message = state.messages.get(frame.reply);
  if (!message || message.role !== "assistant") return;
  // A new step cuts the text at its offset: render it at once (it is not a delta).
  if (noteToolFrame(message, frame)) renderNow(message);
}

function onReplyUsage(frame) {
  // OpenRouter's own figures replaced an estimate in the ledger: show what the admin sees.
  const message = state.messages.get(frame.reply);
  if (!message || !frame.usage) return;
  message.usage = frame.usage;
  refreshMessage(message);
}

function onConversationUpdated(frame) {
  retitle(frame.conversation, frame.title);
}

function onError(frame) {
  if (frame.code === "auth_expired") {
    // The socket closes with 4401 next; unsent messages stay, waiting for a new login.
    markLoggedOut();
    refreshAllPending();
    return;
  }
  if (frame.code === "server_restarting") {
    // This worker stops and stored nothing: reconnect (to another worker); the message is
    // still pending and goes again on hello, with the same client_id.
    dropConnection();
    return;
  }
  const pending = frame.client_id != null ? state.pending.get(frame.client_id) : null;
  if (pending) {
    if (pending.kind === "regenerate") {
      state.pending.delete(pending.client_id);
      const old = state.messages.get(pending.reply);
      if (old) {
        old.regenerating = false;
        refreshMessage(old);
        showMessageError(old, errorText(frame));
      }
      announce(errorText(frame));
      return;
    }
    // The message was refused and nothing was stored: keep it on screen with the reason.
    pending.error = { code: frame.code, message: frame.message, retry_after: frame.retry_after };
    refreshPending(pending);
    announce(errorText(pending.error));
    return;
  }
  const reply = frame.reply != null ? state.messages.get(frame.reply) : null;
  if (reply) {
    // E.g. a resume of a reply that is gone: stop waiting for it and say why, in place.
    if (isLive(reply) && frame.code === "not_found") reply.status = "interrupted";
    reply.error = { code: frame.code, message: frame.message, retry_after: frame.retry_after };
    refreshMessage(reply);
    showMessageError(reply, errorText(reply.error));
    refreshComposer();
    return;
  }
  if (frame.code === "not_found" && Date.now() - socket.lastReplyRequestAt < 5000) {
    // The answer to a stop or resume of a reply that ended or is gone (the frame names no
    // reply): reload what the server holds rather than show a puzzling error.
    if (state.conversationId != null) openConversation(state.conversationId, { keep: true });
    return;
  }
  showComposerError(errorText(frame));
}
