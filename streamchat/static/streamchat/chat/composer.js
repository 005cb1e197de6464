/* The message box: Enter sends, Shift+Enter is a new line, Escape stops a streaming reply; Stop.
 * The typed text is kept as a draft until the server acknowledges it (draft.js); the attached
 * files go with it (attachments.js). */
import { gettext } from "./i18n.js";
import { els, showComposerError } from "./page.js";
import { autosize, loadDraft, saveDraft } from "./draft.js";
import { attachmentsToSend, markSending } from "./attachments.js";
import { newClientId, queue } from "./messages.js";
import { requestStop } from "./socket.js";
import { keyOf, leafId, liveReply, state, waitingForAck } from "./tree.js";

function submitMessage() {
  const text = els.input.value;
  const files = attachmentsToSend();
  if (!text.trim() && !files.ready.length && !files.uploading) return;
  showComposerError("");
  if (liveReply()) {
    showComposerError(gettext("A reply is still streaming: wait for it or stop it."));
    return;
  }
  if (waitingForAck()) {
    // A second message before the first is acknowledged could start a second new conversation.
    showComposerError(gettext("Your previous message is still being sent."));
    return;
  }
  if (files.uploading) {
    showComposerError(gettext("Wait for the attachments to finish uploading, or remove them."));
    return;
  }
  const parent = leafId();
  const clientId = newClientId();
  const frame = { type: "send", client_id: clientId, content: text, conversation: state.conversationId, model: els.model.value };
  if (parent != null) frame.parent = parent;
  const ids = files.ready.map((a) => a.id);
  if (ids.length) {
    frame.attachments = ids;
    markSending(ids); // they leave the tray when the send is acknowledged
  }
  saveDraft(text); // kept until the server acknowledges it
  els.input.value = "";
  autosize();
  queue({ client_id: clientId, kind: "send", content: text, attachments: files.ready, parent: parent, parentKey: keyOf(parent), conversation: state.conversationId, model: els.model.value, frame: frame });
}

export function stopReply() {
  const live = liveReply();
  if (live) requestStop(live);
}

export function wireComposer() {
  let draftTimer = null;
  els.input.addEventListener("input", () => {
    autosize();
    window.clearTimeout(draftTimer);
    draftTimer = window.setTimeout(() => {
      // Keep an unacknowledged message's text rather than an emptied box.
      let unacked = false;
      state.pending.forEach((p) => { if (p.kind === "send") unacked = true; });
      if (els.input.value || !unacked) saveDraft(els.input.value);
    }, 300);
  });
  els.input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submitMessage();
    } else if (event.key === "Escape" && liveReply()) {
      event.preventDefault();
      stopReply();
    }
  });
  els.composer.addEventListener("submit", (event) => { event.preventDefault(); submitMessage(); });
  els.stop.addEventListener("click", stopReply);
  els.input.value = loadDraft();
  autosize();
}
