/* Narrow screens: the conversation list is a drawer behind the ☰ button. */
import { els } from "./page.js";

export function openSidebar() {
  els.app.setAttribute("data-sidebar", "open");
  els.openSidebar.setAttribute("aria-expanded", "true");
  els.search.focus();
}

export function closeSidebar() {
  if (els.app.getAttribute("data-sidebar") !== "open") return;
  els.app.setAttribute("data-sidebar", "closed");
  els.openSidebar.setAttribute("aria-expanded", "false");
}

export function wireSidebar() {
  els.openSidebar.addEventListener("click", openSidebar);
  els.closeSidebar.addEventListener("click", () => { closeSidebar(); els.openSidebar.focus(); });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && els.app.getAttribute("data-sidebar") === "open") closeSidebar();
  });
}
