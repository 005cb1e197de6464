/* Narrow screens: the conversation list is a drawer behind the ☰ button, over a scrim. */
import { els } from "./page.js";

const scrim = document.getElementById("sc-scrim"); // optional: a host's template may leave it out

function isOpen() { return els.app.getAttribute("data-sidebar") === "open"; }

export function openSidebar() {
  els.app.setAttribute("data-sidebar", "open");
  els.openSidebar.setAttribute("aria-expanded", "true");
  // The drawer itself, not its search box: a focused text box pops a phone's keyboard up.
  document.getElementById("sc-sidebar").focus({ preventScroll: true });
}

/** ``refocus``: give the focus back to ☰ (the drawer was dismissed, nothing was chosen in it). */
export function closeSidebar(refocus) {
  if (!isOpen()) return;
  els.app.setAttribute("data-sidebar", "closed");
  els.openSidebar.setAttribute("aria-expanded", "false");
  if (refocus === true) els.openSidebar.focus();
}

export function wireSidebar() {
  els.openSidebar.addEventListener("click", openSidebar);
  els.closeSidebar.addEventListener("click", () => { closeSidebar(true); });
  if (scrim) scrim.addEventListener("click", () => { closeSidebar(true); });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || !isOpen() || document.querySelector("dialog[open]")) return;
    event.preventDefault(); // this Esc closes the drawer and does nothing else (shortcuts.js)
    closeSidebar(true);
  });
}
