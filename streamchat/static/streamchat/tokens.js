/* The API tokens page: Copy puts the new token on the clipboard (and selects it as a fallback). */
(function () {
  "use strict";
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var input = document.getElementById(button.getAttribute("data-copy"));
    if (!input) return;
    input.select();
    var done = function () { button.textContent = "Copied"; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(done, function () {});
    } else {
      try { if (document.execCommand("copy")) done(); } catch (e) { /* selected: copy by hand */ }
    }
  });
})();
