/* A reply's tool steps (docs/protocol.md "Tool calls"): each call the model made is a collapsible
 * step placed in the reply's text at its offset — tool name, status and duration, with the
 * arguments and the result summary inside — and a call that waits for the user shows Approve /
 * Decline with the time left, answered with the websocket's tool.confirm frame.
 *
 * Everything here is the model's or the tool's text: it reaches the DOM only through
 * textContent. Steps come from the conversation JSON (stored calls, after a reload) and from the
 * tool.call / tool.result / tool.confirm frames (live, or again on resume): a call is known by
 * its id, so seeing it twice changes nothing. */
import { gettext, interpolate } from "./i18n.js";
import { announce, clone } from "./page.js";
import * as render from "./render.js";
import { sendFrame } from "./socket.js";

/** The message's steps by call id (made from its stored calls the first time). */
function stepsOf(message) {
  if (!message.steps) {
    message.steps = new Map();
    (message.toolCalls || []).forEach((row) => {
      note(message, Object.assign({ type: "tool.call" }, row));
      note(message, Object.assign({ type: "tool.result" }, row));
    });
  }
  return message.steps;
}

/** Does the reply have steps to show? */
export function hasSteps(message) {
  return stepsOf(message).size > 0;
}

/** The reply's step elements with their offsets (code points), in the order they happened. */
export function stepsAt(message) {
  return Array.from(stepsOf(message).values())
    .sort((a, b) => a.offset - b.offset || a.step - b.step || a.order - b.order)
    .map((step) => ({ offset: step.offset, el: step.el }));
}

/** The reply's text cut at its steps' offsets: Markdown, a step, Markdown, … (each piece
 * rendered and sanitised on its own; the step elements are kept, so an opened one stays open). */
export function renderWithSteps(message, streaming) {
  const fragment = document.createDocumentFragment();
  const points = Array.from(message.text);
  let at = 0;
  let piece = 0;
  const text = (end) => {
    if (end > at) {
      const last = end >= points.length;
      fragment.append(render.markdown(points.slice(at, end).join(""), { docId: "m" + message.id + "-" + piece++, streaming: streaming && last }));
      at = end;
    }
  };
  stepsAt(message).forEach((step) => {
    text(Math.min(step.offset, points.length));
    fragment.append(step.el);
  });
  text(points.length);
  return fragment;
}

/** A tool frame for ``message`` (a reply this page shows): true when a step was added, which
 * changes where the reply's text is cut (the caller renders it again). */
export function noteToolFrame(message, frame) {
  const known = stepsOf(message).has(frame.call);
  note(message, frame);
  return !known && stepsOf(message).has(frame.call);
}

/** The reply ended: a prompt still on screen can no longer be answered. */
export function endSteps(message) {
  if (!message.steps) return;
  message.steps.forEach((step) => { if (step.waiting) closePrompt(step, gettext("No decision was needed any more.")); });
}

function note(message, frame) {
  const steps = message.steps;
  if (typeof frame.call !== "string" || !frame.call) return;
  let step = steps.get(frame.call);
  if (!step) {
    if (frame.type === "tool.result" && frame.offset == null) return; // its call comes first
    step = makeStep(message, frame, steps.size);
    steps.set(frame.call, step);
  }
  if (frame.type === "tool.confirm") askConfirm(message, step, frame);
  else if (frame.type === "tool.result") finish(step, frame);
}

const STATUS = {
  running: () => gettext("running…"),
  waiting: () => gettext("waiting for your decision"),
  ok: () => gettext("done"),
  error: () => gettext("failed"),
  timeout: () => gettext("timed out"),
  declined: () => gettext("declined"),
  denied: () => gettext("not allowed"),
};

function statusText(status) {
  return (STATUS[status] || (() => status))();
}

function makeStep(message, frame, order) {
  const el = clone("tool-step");
  const step = {
    reply: message.id,
    call: frame.call,
    step: Number(frame.step) || 1,
    offset: Math.max(0, Number(frame.offset) || 0),
    order: order,
    name: String(frame.name || ""),
    status: "running",
    el: el,
    parts: {
      name: el.querySelector(".sc-tool-name"),
      status: el.querySelector(".sc-tool-status"),
      duration: el.querySelector(".sc-tool-duration"),
      args: el.querySelector(".sc-tool-arguments"),
      resultWrap: el.querySelector(".sc-tool-result-wrap"),
      result: el.querySelector(".sc-tool-result"),
      prompt: el.querySelector(".sc-tool-confirm"),
      question: el.querySelector(".sc-tool-question"),
      left: el.querySelector(".sc-tool-left"),
      approve: el.querySelector('[data-tool="approve"]'),
      decline: el.querySelector('[data-tool="decline"]'),
    },
    waiting: false,
    timer: 0,
  };
  el.setAttribute("data-call", step.call);
  step.parts.name.textContent = step.name;
  step.parts.args.textContent = prettyJson(frame.arguments);
  step.parts.approve.addEventListener("click", () => decide(step, true));
  step.parts.decline.addEventListener("click", () => decide(step, false));
  showStatus(step);
  return step;
}

/** The model's arguments, indented when they are JSON (as it wrote them otherwise). */
function prettyJson(text) {
  if (typeof text !== "string") return "";
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch (e) { return text; }
}

function showStatus(step) {
  step.el.setAttribute("data-status", step.status);
  step.parts.status.textContent = statusText(step.status);
}

function finish(step, frame) {
  if (step.waiting) closePrompt(step, "");
  step.status = String(frame.status || "ok");
  showStatus(step);
  const ms = Number(frame.duration_ms);
  step.parts.duration.textContent = isFinite(ms) && frame.duration_ms != null ? formatDuration(ms) : "";
  step.parts.result.textContent = typeof frame.summary === "string" ? frame.summary : "";
  step.parts.resultWrap.hidden = false;
}

function formatDuration(ms) {
  return ms < 1000 ? interpolate(gettext("%s ms"), [Math.round(ms)]) : interpolate(gettext("%s s"), [(ms / 1000).toFixed(1)]);
}

// --- Approve / Decline ------------------------------------------------------------------------

function askConfirm(message, step, frame) {
  // Decided here already, or ended: a resume repeats the frame.
  if (step.decided || step.waiting || step.status !== "running") return;
  const seconds = Number(frame.expires_in);
  step.waiting = true;
  step.status = "waiting";
  step.deadline = performance.now() + (isFinite(seconds) ? seconds : 0) * 1000;
  showStatus(step);
  const parts = step.parts;
  parts.question.textContent = interpolate(gettext("The model wants to run %s. Allow it?"), [step.name]);
  parts.prompt.hidden = false;
  parts.approve.disabled = false;
  parts.decline.disabled = false;
  tick(step);
  step.timer = window.setInterval(() => tick(step), 1000);
  announce(interpolate(gettext("%s waits for your approval"), [step.name]));
}

function tick(step) {
  const left = Math.max(0, Math.ceil((step.deadline - performance.now()) / 1000));
  step.parts.left.textContent = interpolate(gettext("%s s left"), [left]);
  // A lapse declines on the server: its tool.result follows.
  if (left <= 0) closePrompt(step, gettext("No answer in time: declined."));
}

function decide(step, approve) {
  if (!step.waiting) return;
  step.decided = true;
  sendFrame({ type: "tool.confirm", reply: step.reply, call: step.call, approve: approve });
  // The next focus stop is the step itself, so the keyboard does not fall back to the page.
  const summary = step.el.querySelector("summary");
  closePrompt(step, approve ? gettext("Approved: running…") : gettext("Declined."));
  step.status = approve ? "running" : "declined";
  showStatus(step);
  if (summary) summary.focus();
}

function closePrompt(step, text) {
  window.clearInterval(step.timer);
  step.waiting = false;
  step.parts.approve.disabled = true;
  step.parts.decline.disabled = true;
  step.parts.prompt.hidden = true;
  step.parts.left.textContent = "";
  if (text) announce(text);
}
