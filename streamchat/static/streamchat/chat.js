/* streamchat chat page: plain JS, no build step.
 *
 * Talks to the server over one websocket (docs/protocol.md, protocol v1) and a small JSON API
 * (docs/ui.md). Guarantees kept here:
 * - Model output is rendered as Markdown with raw HTML off (markdown-it) and the whole HTML is
 *   sanitised with DOMPurify on every render; text never reaches innerHTML unsanitised.
 * - Deltas only append to a string; the DOM is rendered at most once per animation frame.
 * - Offsets count code points. A reply that was streaming is resumed from the offset held, after a
 *   reconnect or a reload; overlaps are dropped, gaps are asked for again.
 * - A typed message is kept (in the page and in localStorage) until the server acknowledges it.
 */
(function () {
  "use strict";

  var PROTOCOL = 1;
  var ROOT = "root"; // tree key of top-level messages
  var PING_EVERY_MS = 20000;
  var SILENCE_LIMIT_MS = 50000; // no frame for this long: the socket is dead, reconnect
  var BACKOFF_FIRST_MS = 500;
  var BACKOFF_MAX_MS = 15000;
  var RESUME_RETRY_MS = 4000;

  var config = JSON.parse(document.getElementById("streamchat-config").textContent);
  var $ = function (id) { return document.getElementById(id); };
  var els = {
    app: $("streamchat"),
    list: $("sc-conversations"),
    listEmpty: $("sc-list-empty"),
    search: $("sc-search"),
    searchForm: $("sc-search-form"),
    newChat: $("sc-new"),
    openSidebar: $("sc-open-sidebar"),
    closeSidebar: $("sc-close-sidebar"),
    title: $("sc-title"),
    model: $("sc-model"),
    connection: $("sc-connection"),
    messages: $("sc-messages"),
    empty: $("sc-empty"),
    announce: $("sc-announce"),
    composer: $("sc-composer"),
    composerError: $("sc-composer-error"),
    input: $("sc-input"),
    send: $("sc-send"),
    stop: $("sc-stop"),
    deleteDialog: $("sc-delete-dialog"),
    deleteName: $("sc-delete-name"),
    jump: $("sc-jump") // optional: a host's template may leave it out
  };

  // --- rendering model output (render.js) ---------------------------------------------------

  var render = window.streamchatRender;

  // --- state ----------------------------------------------------------------------------------

  var state = {
    conversationId: null,
    title: "",
    messages: new Map(), // id → message
    children: new Map(), // parent id or ROOT → [child ids], oldest first
    chosen: new Map(), // parent id or ROOT → the child shown
    pending: new Map(), // client_id → a send / edit / regenerate not acknowledged yet
    conversations: [], // the sidebar list
    loadSeq: 0
  };

  function keyOf(parent) { return parent == null ? ROOT : parent; }

  function cpLength(text) {
    // Code points, as the protocol counts them (a fast path for plain ASCII).
    return /^[\x00-\x7f]*$/.test(text) ? text.length : Array.from(text).length;
  }

  function dropCodePoints(text, n) {
    if (n <= 0) return text;
    if (/^[\x00-\x7f]*$/.test(text)) return text.slice(n);
    return Array.from(text).slice(n).join("");
  }

  function makeMessage(data) {
    var text = data.content || "";
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
      // Frames carry no time: a message this page saw start is stamped with the page's clock.
      created: data.created ? new Date(data.created) : new Date(),
      resumeAt: 0, // when a resume was last asked for (gap handling)
      regenerating: false,
      el: null
    };
  }

  function addMessage(message) {
    state.messages.set(message.id, message);
    var key = keyOf(message.parent);
    var kids = state.children.get(key);
    if (!kids) state.children.set(key, (kids = []));
    if (kids.indexOf(message.id) < 0) kids.push(message.id);
    return message;
  }

  function isLive(message) {
    return message.role === "assistant" && (message.status === "streaming" || message.status === "pending");
  }

  function liveReply() {
    var found = null;
    state.messages.forEach(function (m) { if (!found && isLive(m)) found = m; });
    return found;
  }

  /** The branch shown: from the root, the chosen (else newest) child at each level. */
  function visiblePath() {
    var path = [];
    var key = ROOT;
    for (;;) {
      var kids = state.children.get(key);
      if (!kids || !kids.length) break;
      var id = state.chosen.get(key);
      if (kids.indexOf(id) < 0) id = kids[kids.length - 1];
      path.push(id);
      key = id;
    }
    return path;
  }

  function choosePathTo(id) {
    var message = state.messages.get(id);
    while (message) {
      state.chosen.set(keyOf(message.parent), message.id);
      message = state.messages.get(message.parent);
    }
  }

  // --- drafts: the typed message survives a reload until it is acknowledged -------------------

  var draftKey = "streamchat:" + config.user + ":draft";
  function saveDraft(text) {
    try { if (text) localStorage.setItem(draftKey, text); else localStorage.removeItem(draftKey); } catch (e) { /* private mode */ }
  }
  function loadDraft() {
    try { return localStorage.getItem(draftKey) || ""; } catch (e) { return ""; }
  }

  // --- text for errors ------------------------------------------------------------------------

  function errorText(error) {
    if (!error) return "";
    var code = error.code;
    if (code === "rate_limited") {
      return error.retry_after != null
        ? "Rate limited: try again in " + Math.max(1, Math.ceil(Number(error.retry_after))) + " s"
        : "Rate limited: try again later";
    }
    if (code === "upstream_rate_limited") return "Rate limited by the model provider: try again in a moment";
    if (code === "model_unavailable" || code === "unknown_model") return "This model is not available";
    if (code === "interrupted") return "The reply was interrupted";
    if (code === "busy") return "A reply is still streaming in this conversation: wait for it or stop it";
    if (code === "auth_expired") return "Your session ended: log in again";
    if (code === "not_found") return "Not found: it may have been deleted";
    if (code === "first_token_timeout" || code === "timeout" || code === "total_timeout") return "The model took too long to answer";
    if (code === "idle_timeout") return "The model stopped sending: the reply was cut short";
    return error.message || "Something went wrong (" + code + ")";
  }

  function announce(text) {
    els.announce.textContent = "";
    // A fresh text node each time so repeated messages are announced again.
    window.setTimeout(function () { els.announce.textContent = text; }, 30);
  }

  function showComposerError(text) {
    els.composerError.textContent = text;
    els.composerError.hidden = !text;
  }

  function showConnection(text, kind) {
    els.connection.textContent = text || "";
    els.connection.hidden = !text;
    if (kind) els.connection.setAttribute("data-kind", kind); else els.connection.removeAttribute("data-kind");
  }

  // --- message elements -----------------------------------------------------------------------

  function button(label, className, action, ariaLabel) {
    var b = document.createElement("button");
    b.type = "button";
    b.className = className || "sc-small-button";
    b.textContent = label;
    if (action) b.setAttribute("data-action", action);
    if (ariaLabel) b.setAttribute("aria-label", ariaLabel);
    return b;
  }

  function messageElement(message) {
    if (message.el) return message.el;
    var el = document.createElement("article");
    el.className = "sc-msg sc-msg--" + message.role;
    el.setAttribute("data-id", message.id);
    var head = document.createElement("div");
    head.className = "sc-msg-head";
    var role = document.createElement("span");
    role.className = "sc-role";
    role.textContent = message.role === "user" ? "You" : "Assistant";
    var siblings = document.createElement("span");
    siblings.className = "sc-siblings";
    siblings.hidden = true;
    head.append(role, timeElement(message.created), siblings);
    var reasoning = document.createElement("details");
    reasoning.className = "sc-reasoning";
    reasoning.hidden = true;
    var summary = document.createElement("summary");
    summary.textContent = "Thinking";
    var reasoningText = document.createElement("pre");
    reasoning.append(summary, reasoningText);
    var body = document.createElement("div");
    body.className = "sc-body";
    var note = document.createElement("p");
    note.className = "sc-msg-note";
    note.hidden = true;
    var error = document.createElement("p");
    error.className = "sc-msg-error";
    error.setAttribute("role", "alert");
    error.hidden = true;
    var meta = document.createElement("div");
    meta.className = "sc-meta";
    var actions = document.createElement("div");
    actions.className = "sc-actions";
    if (message.role === "assistant") {
      actions.append(
        button("Copy", "sc-small-button", "copy", "Copy this reply"),
        button("Regenerate", "sc-small-button", "regenerate", "Regenerate this reply")
      );
    } else {
      actions.append(button("Edit", "sc-small-button", "edit", "Edit this message"));
    }
    el.append(head, reasoning, body, note, error, meta, actions);
    message.el = el;
    message.parts = {
      siblings: siblings, body: body, note: note, error: error, meta: meta, actions: actions,
      reasoning: reasoning, reasoningText: reasoningText
    };
    if (message.role === "user") body.textContent = message.text;
    else renderBody(message);
    refreshMessage(message);
    return el;
  }

  var timeFormat = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
  var dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

  /** <time>: the hour today, the date and hour before; the full date and time on hover. */
  function timeElement(date) {
    var el = document.createElement("time");
    el.className = "sc-time";
    if (!date || isNaN(date.getTime())) return el;
    el.dateTime = date.toISOString();
    el.title = dateTimeFormat.format(date);
    el.textContent = date.toDateString() === new Date().toDateString() ? timeFormat.format(date) : el.title;
    return el;
  }

  function renderBody(message) {
    if (!message.el && !message.parts) return;
    if (message.role === "user") { message.parts.body.textContent = message.text; return; }
    // While it streams, an unfinished construct is closed or held back (render.streamingText).
    message.parts.body.replaceChildren(render.markdown(message.text, { docId: "m" + message.id, streaming: isLive(message) }));
    if (message.reasoning) {
      message.parts.reasoning.hidden = false;
      message.parts.reasoningText.textContent = message.reasoning;
    }
  }

  // The rule of streamchat.pricing.usd, which prints money everywhere else: the exact amount (the
  // server sends decimal strings), at least two decimals; so a sub-cent cost never reads "$0.00".
  function formatCost(cost) {
    if (cost == null || cost === "") return "cost unknown";
    var text = String(cost).trim();
    if (!/^-?\d+(\.\d+)?$/.test(text)) {  // a number, or exponent notation: at most 12 places
      var value = Number(cost);
      if (!isFinite(value)) return "cost unknown";
      text = value.toFixed(12);
    }
    var sign = text.charAt(0) === "-" ? "-" : "";
    var parts = text.replace(/^-/, "").split(".");
    var whole = parts[0].replace(/^0+(?=\d)/, "").replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    var fraction = (parts[1] || "").replace(/0+$/, "");
    while (fraction.length < 2) fraction += "0";
    if (!/[1-9]/.test(whole + fraction)) sign = "";
    return sign + "$" + whole + "." + fraction;
  }

  function refreshMessage(message) {
    var el = message.el;
    if (!el) return;
    var parts = message.parts;
    el.setAttribute("data-status", message.status);
    if (isLive(message)) el.setAttribute("aria-busy", "true"); else el.removeAttribute("aria-busy");
    // Sibling switcher: ‹ 2 / 3 ›
    var siblings = state.children.get(keyOf(message.parent)) || [];
    parts.siblings.replaceChildren();
    parts.siblings.hidden = siblings.length < 2;
    if (siblings.length > 1) {
      var index = siblings.indexOf(message.id);
      var prev = button("‹", "sc-icon-button", "prev", "Previous version");
      var next = button("›", "sc-icon-button", "next", "Next version");
      prev.disabled = index <= 0;
      next.disabled = index >= siblings.length - 1;
      var count = document.createElement("span");
      count.className = "sc-sibling-count";
      count.textContent = (index + 1) + " / " + siblings.length;
      parts.siblings.append(prev, count, next);
    }
    // Status note and error, in place.
    var note = "";
    var error = "";
    if (message.role === "assistant") {
      if (message.status === "stopped") note = "Stopped";
      else if (message.status === "interrupted") error = errorText(message.error && message.error.code !== "interrupted" ? message.error : { code: "interrupted" });
      else if (message.status === "error") error = errorText(message.error) || "The reply failed";
      else if (message.status === "pending" && !message.text) note = "Waiting for the model…";
      if (message.finishReason === "length" && message.status === "complete") note = "The reply reached its length limit";
      if (message.regenerating) note = "Regenerating…";
    }
    parts.note.textContent = note;
    parts.note.hidden = !note;
    parts.error.textContent = error;
    parts.error.hidden = !error;
    // Model, tokens and cost.
    var meta = [];
    if (message.role === "assistant") {
      if (message.model) meta.push(message.model);
      if (message.usage) {
        var u = message.usage;
        var total = (u.prompt_tokens || 0) + (u.completion_tokens || 0);
        meta.push(total + " tokens (" + (u.prompt_tokens || 0) + " in, " + (u.completion_tokens || 0) + " out)");
        // An estimate (OpenRouter reported no usage) says so until its own figure arrives.
        meta.push(u.estimated ? "≈ " + formatCost(u.cost) + " (estimate)" : formatCost(u.cost));
      }
    }
    parts.meta.textContent = meta.join(" · ");
    parts.meta.hidden = !meta.length;
    var live = liveReply();
    parts.actions.querySelectorAll("button").forEach(function (b) {
      var action = b.getAttribute("data-action");
      if (action === "regenerate" || action === "edit") b.disabled = !!live || message.regenerating;
      if (action === "copy") b.disabled = !message.text;
    });
  }

  function pendingElement(pending) {
    if (pending.el) return pending.el;
    var el = document.createElement("article");
    el.className = "sc-msg sc-msg--user sc-msg--pending";
    el.setAttribute("data-client-id", pending.client_id);
    var head = document.createElement("div");
    head.className = "sc-msg-head";
    var role = document.createElement("span");
    role.className = "sc-role";
    role.textContent = "You";
    head.append(role);
    var body = document.createElement("div");
    body.className = "sc-body";
    body.textContent = pending.content;
    var note = document.createElement("p");
    note.className = "sc-msg-note";
    var error = document.createElement("p");
    error.className = "sc-msg-error";
    error.setAttribute("role", "alert");
    var actions = document.createElement("div");
    actions.className = "sc-actions";
    actions.append(
      button("Retry", "sc-small-button", "retry", "Send this message again"),
      button("Edit", "sc-small-button", "edit-pending", "Put this message back in the message box")
    );
    el.append(head, body, note, error, actions);
    pending.el = el;
    pending.parts = { note: note, error: error, actions: actions };
    refreshPending(pending);
    return el;
  }

  function refreshPending(pending) {
    if (!pending.el) return;
    var text = pending.error ? errorText(pending.error) : "";
    pending.parts.error.textContent = text;
    pending.parts.error.hidden = !text;
    pending.parts.note.textContent = pending.error ? "" : (socket.open ? "Sending…" : "Waiting for the connection…");
    pending.parts.note.hidden = !!pending.error;
    pending.parts.actions.hidden = !pending.error;
  }

  /** Lay out the visible branch (elements are reused; only structure changes here). */
  function renderThread() {
    var path = visiblePath();
    var nodes = [];
    var cut = path.length;
    var shownPending = [];
    state.pending.forEach(function (p) {
      if (p.conversation !== state.conversationId || p.kind === "regenerate") return;
      shownPending.push(p);
      var at = p.parentKey === ROOT ? 0 : path.indexOf(p.parentKey) + 1;
      if (at > 0 || p.parentKey === ROOT) cut = Math.min(cut, at);
    });
    for (var i = 0; i < cut; i++) {
      var message = state.messages.get(path[i]);
      if (message.role === "system") continue;
      nodes.push(messageElement(message));
      refreshMessage(message);
    }
    shownPending.forEach(function (p) { nodes.push(pendingElement(p)); refreshPending(p); });
    els.empty.hidden = nodes.length > 0;
    var stick = nearBottom();
    els.messages.replaceChildren(els.empty);
    nodes.forEach(function (n) { els.messages.append(n); });
    if (stick) scrollToBottom(); else refreshJump();
    refreshComposer();
  }

  function refreshComposer() {
    var live = liveReply();
    els.stop.hidden = !live;
    els.send.hidden = !!live;
  }

  function nearBottom() {
    var m = els.messages;
    return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
  }
  function scrollToBottom() { els.messages.scrollTop = els.messages.scrollHeight; refreshJump(); }

  /** "Jump to latest" shows while the view is scrolled up from the newest text. */
  function refreshJump() {
    if (els.jump) els.jump.hidden = nearBottom();
  }
  els.messages.addEventListener("scroll", refreshJump, { passive: true });
  if (els.jump) els.jump.addEventListener("click", function () { scrollToBottom(); els.input.focus(); });

  // --- rendering on animation frames ----------------------------------------------------------

  var dirty = new Set();
  var frameRequested = false;
  var nextRenderAt = 0; // a long reply renders less often, so rendering stays a small share of time

  function markDirty(message) {
    dirty.add(message);
    if (frameRequested) return;
    frameRequested = true;
    var wait = nextRenderAt - performance.now();
    if (wait > 0) window.setTimeout(function () { window.requestAnimationFrame(flushRenders); }, wait);
    else window.requestAnimationFrame(flushRenders);
  }

  function flushRenders() {
    frameRequested = false;
    var started = performance.now();
    var stick = nearBottom();
    dirty.forEach(function (message) {
      if (message.el) renderBody(message);
    });
    dirty.clear();
    if (stick) scrollToBottom(); else refreshJump();
    // Rendering is linear in the reply's length; when one render takes more than a few ms, wait
    // about three times as long before the next, so a very long reply cannot starve the page.
    var cost = performance.now() - started;
    nextRenderAt = cost > 4 ? performance.now() + cost * 3 : 0;
  }

  // --- the websocket --------------------------------------------------------------------------

  var socket = {
    ws: null,
    open: false, // hello received
    attempts: 0,
    timer: null,
    pingTimer: null,
    lastFrameAt: 0,
    loggedOut: false
  };

  function socketUrl() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    return scheme + location.host + config.websocket;
  }

  function connect() {
    if (socket.ws || socket.loggedOut) return;
    window.clearTimeout(socket.timer);
    var ws;
    try { ws = new WebSocket(socketUrl()); } catch (e) { scheduleReconnect(); return; }
    socket.ws = ws;
    ws.onmessage = function (event) {
      socket.lastFrameAt = Date.now();
      var frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      if (frame && typeof frame === "object") handleFrame(frame);
    };
    ws.onclose = function (event) {
      if (socket.ws !== ws) return;
      socket.ws = null;
      socket.open = false;
      window.clearInterval(socket.pingTimer);
      refreshAllPending();
      if (event.code === 4401) {
        socket.loggedOut = true;
        showLoggedOut();
        return;
      }
      if (event.code === 4012 || event.code === 1012) {
        // The server restarts (a deploy): reconnect at once, a proxy sends us to another
        // worker; live replies are resumed and unsent messages sent again on hello.
        socket.attempts = 0;
        window.clearTimeout(socket.timer);
        socket.timer = window.setTimeout(connect, 100 + Math.random() * 400);
        return;
      }
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    if (socket.loggedOut) return;
    var delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * Math.pow(2, socket.attempts));
    delay = delay / 2 + Math.random() * delay / 2; // jitter: many tabs do not reconnect in step
    socket.attempts += 1;
    if (socket.attempts > 1) showConnection("Connection lost. Reconnecting…", "error");
    window.clearTimeout(socket.timer);
    socket.timer = window.setTimeout(connect, delay);
  }

  function reconnectNow() {
    if (socket.ws || socket.loggedOut) return;
    socket.attempts = 0;
    connect();
  }

  function showLoggedOut() {
    els.connection.replaceChildren();
    els.connection.append("You are logged out. ");
    var link = document.createElement("a");
    link.href = config.urls.login + "?next=" + encodeURIComponent(location.pathname);
    link.textContent = "Log in again";
    els.connection.append(link, " to keep chatting; your unsent message is kept.");
    els.connection.hidden = false;
    els.connection.setAttribute("data-kind", "error");
  }

  function sendFrame(frame) {
    if (!socket.ws || !socket.open) return false;
    socket.ws.send(JSON.stringify(frame));
    return true;
  }

  function onHello(frame) {
    socket.open = true;
    socket.attempts = 0;
    showConnection("");
    if (frame.protocol !== PROTOCOL) {
      showConnection("This page is out of date: reload it.", "error");
    } else if (frame.user != null && config.user != null && frame.user !== config.user) {
      showConnection("You are now logged in as someone else: reload the page.", "error");
    }
    window.clearInterval(socket.pingTimer);
    socket.pingTimer = window.setInterval(function () {
      if (Date.now() - socket.lastFrameAt > SILENCE_LIMIT_MS && socket.ws) { socket.ws.close(); return; }
      sendFrame({ type: "ping" });
    }, PING_EVERY_MS);
    if (state.conversationId != null) {
      sendFrame({ type: "subscribe", conversation: state.conversationId });
    }
    state.messages.forEach(function (m) { if (isLive(m)) askResume(m, true); });
    // Not acknowledged yet: send again with the same client_id (the server answers a repeat
    // with the existing ids, so nothing is stored twice).
    state.pending.forEach(function (p) { if (!p.error) sendFrame(p.frame); });
    refreshAllPending();
  }

  function refreshAllPending() { state.pending.forEach(refreshPending); }

  var lastReplyRequestAt = 0; // the last stop or resume sent

  function askResume(message, force) {
    var now = Date.now();
    if (!force && now - message.resumeAt < RESUME_RETRY_MS) return;
    if (sendFrame({ type: "resume", reply: message.id, offset: message.cp })) {
      message.resumeAt = now;
      lastReplyRequestAt = now;
    }
  }

  function handleFrame(frame) {
    switch (frame.type) {
      case "hello": return onHello(frame);
      case "ack": return onAck(frame);
      case "reply.started": return onReplyStarted(frame);
      case "delta": return onDelta(frame, false);
      case "reasoning": return onDelta(frame, true);
      case "reply.finished": return onReplyFinished(frame);
      case "reply.usage": return onReplyUsage(frame);
      case "conversation.updated": return onConversationUpdated(frame);
      case "error": return onError(frame);
      default: return undefined; // pong and anything newer
    }
  }

  function onAck(frame) {
    var pending = state.pending.get(frame.client_id);
    if (!pending) return;
    state.pending.delete(frame.client_id);
    if (pending.kind === "send" && !els.input.value) saveDraft("");
    var isNew = pending.conversation == null;
    if (isNew && state.conversationId == null) {
      state.conversationId = frame.conversation;
      history.replaceState({ conversation: frame.conversation }, "", conversationUrl(frame.conversation));
      sendFrame({ type: "subscribe", conversation: frame.conversation });
    }
    if (frame.conversation !== state.conversationId) { refreshList(); return; }
    if (pending.kind !== "regenerate" && !state.messages.has(frame.message)) {
      addMessage(makeMessage({ id: frame.message, parent: pending.parent, role: "user", content: pending.content }));
    }
    if (pending.kind === "regenerate") {
      var old = state.messages.get(pending.reply);
      if (old) { old.regenerating = false; refreshMessage(old); }
    }
    if (frame.reply != null && !state.messages.has(frame.reply)) {
      addMessage(makeMessage({ id: frame.reply, parent: frame.message, role: "assistant", status: "pending", model: pending.model }));
    }
    choosePathTo(frame.reply != null ? frame.reply : frame.message);
    var reply = state.messages.get(frame.reply);
    renderThread();
    if (reply && !isLive(reply)) refreshMessage(reply);
    if (isNew) refreshList(); else touchListItem(state.conversationId);
  }

  function onReplyStarted(frame) {
    if (frame.conversation !== state.conversationId) { markListStreaming(frame.conversation, true); return; }
    var reply = state.messages.get(frame.reply);
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
    announce("Reply started");
  }

  function onDelta(frame, isReasoning) {
    var message = state.messages.get(frame.reply);
    if (!message || message.role !== "assistant" || typeof frame.text !== "string") return;
    var held = isReasoning ? message.reasoningCp : message.cp;
    var offset = Number(frame.offset) || 0;
    if (offset > held) {
      if (!isReasoning) askResume(message, false); // a gap: ask for the text from what we hold
      return;
    }
    var text = offset < held ? dropCodePoints(frame.text, held - offset) : frame.text;
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
    var message = state.messages.get(frame.reply);
    if (!message) { refreshList(); return; }
    var length = Number(frame.length);
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
    // The final text is rendered at once, so "finished" never shows a stale frame.
    dirty.delete(message);
    if (message.el) renderBody(message);
    refreshMessage(message);
    renderThread();
    if (message.status === "complete") announce("Reply finished");
    else if (message.status === "stopped") announce("Reply stopped");
    else announce(message.parts ? message.parts.error.textContent : "The reply failed");
    refreshList();
  }

  function onReplyUsage(frame) {
    // OpenRouter's own figures replaced an estimate in the ledger: show what the admin sees.
    var message = state.messages.get(frame.reply);
    if (!message || !frame.usage) return;
    message.usage = frame.usage;
    refreshMessage(message);
  }

  function onConversationUpdated(frame) {
    var item = state.conversations.find(function (c) { return c.id === frame.conversation; });
    if (item && typeof frame.title === "string") { item.title = frame.title; renderList(); }
    if (frame.conversation === state.conversationId && typeof frame.title === "string") setTitle(frame.title);
    if (!item) refreshList();
  }

  function onError(frame) {
    if (frame.code === "auth_expired") {
      // The socket closes with 4401 next; unsent messages stay, waiting for a new login.
      socket.loggedOut = true;
      showLoggedOut();
      refreshAllPending();
      return;
    }
    if (frame.code === "server_restarting") {
      // This worker stops and stored nothing: reconnect (to another worker); the message is
      // still pending and goes again on hello, with the same client_id.
      if (socket.ws) socket.ws.close();
      return;
    }
    var pending = frame.client_id != null ? state.pending.get(frame.client_id) : null;
    if (pending) {
      if (pending.kind === "regenerate") {
        state.pending.delete(pending.client_id);
        var old = state.messages.get(pending.reply);
        if (old) {
          old.regenerating = false;
          refreshMessage(old);
          old.parts.error.textContent = errorText(frame);
          old.parts.error.hidden = false;
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
    var reply = frame.reply != null ? state.messages.get(frame.reply) : null;
    if (reply) {
      // E.g. a resume of a reply that is gone: stop waiting for it and say why, in place.
      if (isLive(reply) && frame.code === "not_found") reply.status = "interrupted";
      reply.error = { code: frame.code, message: frame.message, retry_after: frame.retry_after };
      refreshMessage(reply);
      if (reply.parts) {
        reply.parts.error.textContent = errorText(reply.error);
        reply.parts.error.hidden = false;
      }
      refreshComposer();
      return;
    }
    if (frame.code === "not_found" && Date.now() - lastReplyRequestAt < 5000) {
      // The answer to a stop or resume of a reply that ended or is gone (the frame names no
      // reply): reload what the server holds rather than show a puzzling error.
      if (state.conversationId != null) openConversation(state.conversationId, { keep: true });
      return;
    }
    showComposerError(errorText(frame));
  }

  // --- actions --------------------------------------------------------------------------------

  function newClientId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, function (b) { return (b + 256).toString(16).slice(1); }).join("");
  }

  function leafId() {
    var path = visiblePath();
    return path.length ? path[path.length - 1] : null;
  }

  function queue(pending) {
    state.pending.set(pending.client_id, pending);
    sendFrame(pending.frame);
    renderThread();
  }

  function submitMessage() {
    var text = els.input.value;
    if (!text.trim()) return;
    showComposerError("");
    if (liveReply()) {
      showComposerError("A reply is still streaming: wait for it or stop it.");
      return;
    }
    var waiting = false;
    state.pending.forEach(function (p) {
      if (p.conversation === state.conversationId && !p.error) waiting = true;
    });
    if (waiting) {
      // A second message before the first is acknowledged could start a second new conversation.
      showComposerError("Your previous message is still being sent.");
      return;
    }
    var parent = leafId();
    var clientId = newClientId();
    var frame = { type: "send", client_id: clientId, content: text, conversation: state.conversationId, model: els.model.value };
    if (parent != null) frame.parent = parent;
    saveDraft(text); // kept until the server acknowledges it
    els.input.value = "";
    autosize();
    queue({ client_id: clientId, kind: "send", content: text, parent: parent, parentKey: keyOf(parent), conversation: state.conversationId, model: els.model.value, frame: frame });
  }

  function retryPending(pending) {
    state.pending.delete(pending.client_id);
    pending.el = null;
    var clientId = newClientId();
    var frame = Object.assign({}, pending.frame, { client_id: clientId, model: els.model.value });
    queue(Object.assign({}, pending, { client_id: clientId, frame: frame, error: null, el: null, model: els.model.value }));
  }

  function editPending(pending) {
    state.pending.delete(pending.client_id);
    if (!els.input.value) els.input.value = pending.content;
    saveDraft(els.input.value);
    autosize();
    renderThread();
    els.input.focus();
  }

  function regenerate(message) {
    if (liveReply()) return;
    var clientId = newClientId();
    message.regenerating = true;
    refreshMessage(message);
    queue({ client_id: clientId, kind: "regenerate", reply: message.id, conversation: state.conversationId, model: els.model.value,
      frame: { type: "regenerate", reply: message.id, client_id: clientId, model: els.model.value } });
  }

  function startEdit(message) {
    if (liveReply() || message.editing) return;
    message.editing = true;
    var form = document.createElement("div");
    form.className = "sc-edit";
    var label = document.createElement("label");
    label.className = "sc-visually-hidden";
    label.textContent = "Edit your message";
    var area = document.createElement("textarea");
    area.value = message.text;
    area.maxLength = config.max_message_chars;
    label.append(area);
    var buttons = document.createElement("div");
    buttons.className = "sc-edit-buttons";
    var cancel = button("Cancel", "sc-button", null);
    var save = button("Send", "sc-button sc-primary", null);
    buttons.append(cancel, save);
    form.append(label, buttons);
    message.parts.body.replaceWith(form);
    area.focus();
    function close() {
      message.editing = false;
      form.replaceWith(message.parts.body);
    }
    cancel.addEventListener("click", close);
    area.addEventListener("keydown", function (event) {
      if (event.key === "Escape") { event.preventDefault(); close(); }
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); save.click(); }
    });
    save.addEventListener("click", function () {
      var text = area.value;
      if (!text.trim()) return;
      close();
      var clientId = newClientId();
      queue({ client_id: clientId, kind: "edit", content: text, parent: message.parent, parentKey: keyOf(message.parent),
        conversation: state.conversationId, model: els.model.value,
        frame: { type: "edit", message: message.id, content: text, client_id: clientId, model: els.model.value } });
    });
  }

  function stopReply() {
    var live = liveReply();
    if (live && sendFrame({ type: "stop", reply: live.id })) lastReplyRequestAt = Date.now();
  }

  function copyText(text, buttonEl) {
    function done() {
      if (!buttonEl) return;
      var label = buttonEl.textContent;
      buttonEl.textContent = "Copied";
      window.setTimeout(function () { buttonEl.textContent = label; }, 1500);
    }
    function fallback() {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "sc-visually-hidden";
      document.body.append(area);
      area.select();
      try { document.execCommand("copy"); done(); } catch (e) { /* nothing more to try */ }
      area.remove();
    }
    if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).then(done, fallback);
    else fallback();
  }

  els.messages.addEventListener("click", function (event) {
    var anchor = event.target.closest("a[href^='#']");
    if (anchor) {
      // A footnote (or any #link in a reply) goes to that id within the same message, never to
      // another message's element or the page's; the URL stays as it is.
      event.preventDefault();
      var id = null;
      try { id = decodeURIComponent(anchor.getAttribute("href").slice(1)); } catch (e) { return; }
      var article = anchor.closest("article");
      var found = article && Array.from(article.querySelectorAll("[id]")).find(function (el) { return el.id === id; });
      if (found) {
        found.setAttribute("tabindex", "-1");
        found.scrollIntoView({ block: "center" });
        found.focus({ preventScroll: true });
      }
      return;
    }
    var target = event.target.closest("button");
    if (!target) return;
    if (target.classList.contains("sc-code-copy")) {
      var code = target.closest(".sc-code").querySelector("code, pre");
      copyText(code ? code.textContent : "", target);
      return;
    }
    var action = target.getAttribute("data-action");
    var article = target.closest("article");
    if (!action || !article) return;
    if (article.hasAttribute("data-client-id")) {
      var pending = state.pending.get(article.getAttribute("data-client-id"));
      if (!pending) return;
      if (action === "retry") retryPending(pending);
      if (action === "edit-pending") editPending(pending);
      return;
    }
    var message = state.messages.get(Number(article.getAttribute("data-id")));
    if (!message) return;
    if (action === "copy") copyText(message.text, target);
    else if (action === "regenerate") regenerate(message);
    else if (action === "edit") startEdit(message);
    else if (action === "prev" || action === "next") {
      var siblings = state.children.get(keyOf(message.parent)) || [];
      var index = siblings.indexOf(message.id) + (action === "prev" ? -1 : 1);
      if (index < 0 || index >= siblings.length) return;
      state.chosen.set(keyOf(message.parent), siblings[index]);
      renderThread();
      var shown = state.messages.get(siblings[index]);
      var again = shown && shown.parts && shown.parts.siblings.querySelector('[data-action="' + action + '"]');
      if (again && !again.disabled) again.focus();
      else if (shown && shown.parts) shown.parts.siblings.querySelector("button:not(:disabled)")?.focus();
    }
  });

  // --- composer -------------------------------------------------------------------------------

  function autosize() {
    els.input.style.height = "auto";
    els.input.style.height = Math.min(els.input.scrollHeight + 2, window.innerHeight * 0.4) + "px";
  }

  var draftTimer = null;
  els.input.addEventListener("input", function () {
    autosize();
    window.clearTimeout(draftTimer);
    draftTimer = window.setTimeout(function () {
      // Keep an unacknowledged message's text rather than an emptied box.
      var unacked = false;
      state.pending.forEach(function (p) { if (p.kind === "send") unacked = true; });
      if (els.input.value || !unacked) saveDraft(els.input.value);
    }, 300);
  });
  els.input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submitMessage();
    } else if (event.key === "Escape" && liveReply()) {
      event.preventDefault();
      stopReply();
    }
  });
  els.composer.addEventListener("submit", function (event) { event.preventDefault(); submitMessage(); });
  els.stop.addEventListener("click", stopReply);

  // --- conversations: the JSON API ------------------------------------------------------------

  function api(path, options) {
    options = options || {};
    var headers = { Accept: "application/json" };
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    if (options.method && options.method !== "GET") headers["X-CSRFToken"] = config.csrf_token;
    return fetch(path, {
      method: options.method || "GET",
      headers: headers,
      credentials: "same-origin",
      body: options.body !== undefined ? JSON.stringify(options.body) : undefined
    }).then(function (response) {
      if (response.status === 204) return null;
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) {
          if (response.status === 401) { socket.loggedOut = true; showLoggedOut(); }
          var error = new Error(data.message || response.statusText);
          error.code = data.code || "http_" + response.status;
          throw error;
        }
        return data;
      });
    });
  }

  function conversationUrl(id) { return config.urls.chat + "c/" + id + "/"; }
  function conversationApi(id) { return config.urls.conversations + id + "/"; }

  /** A title as shown: plain text, since a title taken from a first message is its Markdown. */
  function shownTitle(title) { return render.plainText(title) || title; }

  function setTitle(title) {
    state.title = title;
    els.title.textContent = title ? shownTitle(title) : "New chat";
  }

  var listSeq = 0;
  var listTimer = null;
  function refreshList() {
    window.clearTimeout(listTimer);
    listTimer = window.setTimeout(loadList, 150);
  }

  function loadList() {
    var seq = ++listSeq;
    var q = els.search.value.trim();
    var url = config.urls.conversations + (q ? "?q=" + encodeURIComponent(q) : "");
    return api(url).then(function (data) {
      if (seq !== listSeq) return;
      state.conversations = data.conversations;
      renderList();
    }, function () { /* the list stays as it was */ });
  }

  function markListStreaming(id, on) {
    var item = id != null && state.conversations.find(function (c) { return c.id === id; });
    if (item) { item.streaming = on; renderList(); }
  }

  function touchListItem(id) {
    var index = state.conversations.findIndex(function (c) { return c.id === id; });
    if (index > 0) {
      state.conversations.unshift(state.conversations.splice(index, 1)[0]);
      renderList();
    }
  }

  function renderList() {
    if (state.renaming) return; // redrawn when the rename ends
    var items = state.conversations.map(function (c) {
      var li = document.createElement("li");
      li.className = "sc-conversation";
      li.setAttribute("data-id", c.id);
      var link = document.createElement("a");
      link.href = conversationUrl(c.id);
      if (c.streaming) {
        var dot = document.createElement("span");
        dot.className = "sc-live-dot";
        dot.setAttribute("aria-label", "streaming");
        link.append(dot);
      }
      var title = shownTitle(c.title);
      link.append(title);
      link.title = title;
      if (c.id === state.conversationId) {
        link.setAttribute("aria-current", "page");
        li.setAttribute("data-current", "");
      }
      // The buttons lie over the end of the title while the row is hovered or focused, so the
      // title has the whole row to itself the rest of the time.
      var actions = document.createElement("span");
      actions.className = "sc-conversation-actions";
      // Icons, so the buttons cover only the end of the row: a click on the title opens it.
      var rename = button("✎", "sc-icon-button", "rename", "Rename " + title);
      var remove = button("✕", "sc-icon-button", "delete", "Delete " + title);
      rename.title = "Rename";
      remove.title = "Delete";
      actions.append(rename, remove);
      li.append(link, actions);
      return li;
    });
    els.list.replaceChildren.apply(els.list, items);
    var q = els.search.value.trim();
    els.listEmpty.hidden = items.length > 0;
    els.listEmpty.textContent = q ? "No conversation matches “" + q + "”." : "No conversations yet.";
  }

  els.list.addEventListener("click", function (event) {
    var li = event.target.closest("li");
    if (!li) return;
    var id = Number(li.getAttribute("data-id"));
    var target = event.target.closest("a, button");
    if (!target) return;
    if (target.tagName === "A") {
      if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
      event.preventDefault();
      openConversation(id, { push: true });
      closeSidebar();
    } else if (target.getAttribute("data-action") === "rename") {
      startRename(li, id);
    } else if (target.getAttribute("data-action") === "delete") {
      confirmDelete(id);
    }
  });

  function startRename(li, id) {
    var item = state.conversations.find(function (c) { return c.id === id; });
    if (!item) return;
    var input = document.createElement("input");
    input.type = "text";
    input.value = item.title;
    input.maxLength = 200;
    input.setAttribute("aria-label", "New title");
    li.replaceChildren(input);
    state.renaming = true;
    input.focus();
    input.select();
    var finished = false;
    function finish(save) {
      if (finished) return;
      finished = true;
      state.renaming = false;
      var title = input.value.trim();
      if (!save || !title || title === item.title) { renderList(); return; }
      api(conversationApi(id), { method: "PATCH", body: { title: title } }).then(function (data) {
        item.title = data.title;
        if (id === state.conversationId) setTitle(data.title);
        renderList();
        announce("Renamed");
      }, function (error) { renderList(); showComposerError(error.message); });
    }
    input.addEventListener("keydown", function (event) {
      if (event.key === "Enter") { event.preventDefault(); finish(true); }
      if (event.key === "Escape") { event.preventDefault(); finish(false); }
    });
    input.addEventListener("blur", function () { finish(true); });
  }

  function confirmDelete(id) {
    var item = state.conversations.find(function (c) { return c.id === id; });
    if (!item) return;
    els.deleteName.textContent = shownTitle(item.title);
    els.deleteDialog.returnValue = "";
    els.deleteDialog.showModal();
    els.deleteDialog.addEventListener("close", function onClose() {
      els.deleteDialog.removeEventListener("close", onClose);
      if (els.deleteDialog.returnValue !== "delete") return;
      api(conversationApi(id), { method: "DELETE" }).then(function () {
        state.conversations = state.conversations.filter(function (c) { return c.id !== id; });
        renderList();
        if (id === state.conversationId) newChat(true);
        announce("Conversation deleted");
      }, function (error) { showComposerError(error.message); });
    });
  }

  var searchTimer = null;
  els.search.addEventListener("input", function () {
    window.clearTimeout(searchTimer);
    searchTimer = window.setTimeout(loadList, 250);
  });
  els.searchForm.addEventListener("submit", function (event) { event.preventDefault(); loadList(); });

  /** Show one conversation. ``keep``: a reload of the open one, keeping text this page holds. */
  function openConversation(id, options) {
    options = options || {};
    var seq = ++state.loadSeq;
    if (options.push) history.pushState({ conversation: id }, "", conversationUrl(id));
    return api(conversationApi(id)).then(function (data) {
      if (seq !== state.loadSeq) return;
      var previous = options.keep && id === state.conversationId ? state.messages : new Map();
      var chosen = options.keep && id === state.conversationId ? state.chosen : new Map();
      var switching = id !== state.conversationId;
      state.conversationId = id;
      state.messages = new Map();
      state.children = new Map();
      state.chosen = new Map();
      data.messages.forEach(function (item) {
        var message = makeMessage(item);
        var old = previous.get(message.id);
        if (old && old.cp > message.cp && isLive(message)) {
          message.text = old.text; // the saved checkpoint is older than what this page holds
          message.cp = old.cp;
        }
        addMessage(message);
      });
      if (data.current != null) choosePathTo(data.current);
      chosen.forEach(function (child, parent) { if (state.messages.has(child)) state.chosen.set(parent, child); });
      setTitle(data.title);
      if (switching) selectModel(data.model);
      renderThread();
      renderList();
      sendFrame({ type: "subscribe", conversation: id });
      state.messages.forEach(function (m) { if (isLive(m)) askResume(m, true); });
      if (switching) scrollToBottom();
    }, function (error) {
      if (seq !== state.loadSeq) return;
      if (error.code === "not_found") {
        newChat(true);
        showComposerError("That conversation no longer exists.");
      } else {
        showComposerError("Could not load the conversation: " + error.message);
      }
    });
  }

  function selectModel(modelId) {
    if (!modelId) return;
    for (var i = 0; i < els.model.options.length; i++) {
      if (els.model.options[i].value === modelId) { els.model.selectedIndex = i; return; }
    }
  }

  function newChat(replace) {
    state.loadSeq += 1;
    state.conversationId = null;
    state.messages = new Map();
    state.children = new Map();
    state.chosen = new Map();
    setTitle("");
    var url = config.urls.chat;
    if (replace) history.replaceState({ conversation: null }, "", url);
    else history.pushState({ conversation: null }, "", url);
    renderThread();
    renderList();
    els.input.focus();
  }

  els.newChat.addEventListener("click", function (event) {
    if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    showComposerError("");
    newChat(false);
    closeSidebar();
  });

  function conversationFromUrl() {
    var rest = location.pathname.slice(config.urls.chat.length);
    var match = /^c\/(\d+)\/?$/.exec(rest);
    return match ? Number(match[1]) : null;
  }

  window.addEventListener("popstate", function () {
    var id = conversationFromUrl();
    if (id == null) newChat(true); else openConversation(id);
  });

  // --- narrow screens: the sidebar slides in --------------------------------------------------

  function openSidebar() {
    els.app.setAttribute("data-sidebar", "open");
    els.openSidebar.setAttribute("aria-expanded", "true");
    els.search.focus();
  }
  function closeSidebar() {
    if (els.app.getAttribute("data-sidebar") !== "open") return;
    els.app.setAttribute("data-sidebar", "closed");
    els.openSidebar.setAttribute("aria-expanded", "false");
  }
  els.openSidebar.addEventListener("click", openSidebar);
  els.closeSidebar.addEventListener("click", function () { closeSidebar(); els.openSidebar.focus(); });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && els.app.getAttribute("data-sidebar") === "open") closeSidebar();
  });

  // --- start ----------------------------------------------------------------------------------

  window.addEventListener("online", reconnectNow);
  document.addEventListener("visibilitychange", function () { if (!document.hidden) reconnectNow(); });

  els.input.value = loadDraft();
  autosize();
  if (config.conversation != null) openConversation(config.conversation);
  else renderThread();
  loadList();
  connect();
})();
