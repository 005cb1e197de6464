/* streamchat: light or dark, for the chat page. Loaded in <head> without `defer`, so the theme is
 * set before the first paint (no flash of the wrong colours) and no inline script is needed.
 *
 * The choice ("system", "light" or "dark") is kept in localStorage under a key naming the user, so
 * people sharing a browser each keep their own; it does not follow a user to another browser.
 * "system" follows prefers-color-scheme, live. The resolved theme is `data-sc-theme` on <html>.
 */
(function () {
  "use strict";

  var CHOICES = ["system", "light", "dark"];
  // Django's JavaScript catalog is a deferred script: its gettext() is looked up when the button
  // is labelled (after the page loaded), and a page without the catalog reads English.
  function gettext(text) { return window.gettext ? window.gettext(text) : text; }
  function labels(choice) {
    if (choice === "light") return { word: gettext("Light"), name: gettext("light") };
    if (choice === "dark") return { word: gettext("Dark"), name: gettext("dark") };
    return { word: gettext("Auto"), name: gettext("automatic (as the system)") };
  }
  var ICONS = { system: "◐", light: "☀", dark: "☾" };
  function withName(format, name) { return format.replace("%s", name); }
  var root = document.documentElement;
  var dark = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
  var script = document.currentScript;
  var user = (script && script.getAttribute("data-user")) || "anonymous";
  var key = "streamchat:" + user + ":theme";

  function stored() {
    var value = null;
    try { value = localStorage.getItem(key); } catch (e) { /* private mode */ }
    return CHOICES.indexOf(value) >= 0 ? value : "system";
  }

  function apply(choice) {
    var theme = choice === "system" ? (dark && dark.matches ? "dark" : "light") : choice;
    root.setAttribute("data-sc-theme", theme);
    root.setAttribute("data-sc-theme-choice", choice);
    var button = document.getElementById("sc-theme");
    if (button) {
      var text = labels(choice);
      button.textContent = ICONS[choice] + " " + text.word;
      button.title = withName(gettext("Theme: %s. Click to change."), text.name);
      // The name holds the visible word ("Light"), so speech input can say what it sees.
      button.setAttribute("aria-label", withName(gettext("Theme: %s (change)"), text.word));
    }
  }

  var current = stored();
  apply(current);
  if (dark) {
    var follow = function () { if (current === "system") apply("system"); };
    if (dark.addEventListener) dark.addEventListener("change", follow); else dark.addListener(follow);
  }
  // Another tab of the same user changed it.
  window.addEventListener("storage", function (event) { if (event.key === key) apply((current = stored())); });

  document.addEventListener("DOMContentLoaded", function () {
    var button = document.getElementById("sc-theme");
    if (!button) return;
    apply(current);
    button.addEventListener("click", function () {
      current = CHOICES[(CHOICES.indexOf(current) + 1) % CHOICES.length];
      try {
        if (current === "system") localStorage.removeItem(key); else localStorage.setItem(key, current);
      } catch (e) { /* private mode: for this page only */ }
      apply(current);
    });
  });
})();
