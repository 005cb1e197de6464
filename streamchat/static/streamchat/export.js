/* The conversation header's Export menu: the open conversation as Markdown or JSON (a download
 * from the JSON API). The open conversation is the one in the address, which chat.js keeps at
 * /c/<id>/, so this file needs no hook in chat.js: it reads the address when the thread is
 * redrawn, when history moves and when the menu opens. It has no text of its own (the template's
 * is translated). */
(function () {
  "use strict";
  var menu = document.getElementById("sc-export");
  var configEl = document.getElementById("streamchat-config");
  if (!menu || !configEl) return;
  var config = JSON.parse(configEl.textContent);

  function openId() {
    var match = /^c\/(\d+)\/?$/.exec(location.pathname.slice(config.urls.chat.length));
    return match ? match[1] : null;
  }

  function update() {
    var id = openId();
    menu.hidden = id === null;
    if (id === null) { menu.open = false; return; }
    menu.querySelectorAll("a[data-format]").forEach(function (link) {
      link.href = config.urls.conversations + id + "/export/?format=" + link.getAttribute("data-format");
    });
  }

  update();
  window.addEventListener("popstate", update);
  menu.addEventListener("toggle", update);
  var thread = document.getElementById("sc-messages");
  if (thread) new MutationObserver(update).observe(thread, { childList: true });
  // A menu: a choice, a click elsewhere or Escape closes it.
  menu.addEventListener("click", function (event) { if (event.target.closest("a")) menu.open = false; });
  document.addEventListener("click", function (event) { if (!menu.contains(event.target)) menu.open = false; });
  menu.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && menu.open) {
      menu.open = false;
      menu.querySelector("summary").focus();
      event.stopPropagation();
    }
  });
})();
