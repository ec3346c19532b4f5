// observd's page keeps itself up to date: every few seconds it asks for its own content again
// (?partial=1) with the ETag it has; the server answers 304 while nothing changed, else the new
// content, which replaces the old one in place (no reload: scroll position and open page stay).
(function () {
  "use strict";
  var main = document.getElementById("live");
  var freshness = document.getElementById("freshness");
  if (!main) return;
  var every = parseInt(main.dataset.pollMs, 10) || 5000;
  var etag = main.dataset.etag || "";

  function stamp(text) {
    if (freshness) freshness.textContent = text + " " + new Date().toLocaleTimeString();
  }

  function busy() {
    // never pull the night picker out from under a finger, nor close what the observer opened
    var active = document.activeElement;
    return (active && active.tagName === "SELECT" && main.contains(active)) ||
      main.querySelector("details[open]") !== null;
  }

  function poll() {
    if (document.hidden || busy()) { setTimeout(poll, every); return; }
    var url = new URL(window.location.href);
    url.searchParams.set("partial", "1");
    fetch(url, { headers: { "If-None-Match": etag }, cache: "no-store", credentials: "same-origin" })
      .then(function (response) {
        if (response.status === 200) {
          etag = response.headers.get("ETag") || "";
          return response.text().then(function (html) { main.innerHTML = html; stamp("updated"); });
        }
        if (response.status === 304) { stamp("checked"); return; }
        stamp("server said " + response.status + " at");
      })
      .catch(function () { stamp("offline at"); })
      .then(function () { setTimeout(poll, every); });
  }

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.matches && target.matches("select[data-autosubmit]") && target.form) target.form.submit();
  });
  setTimeout(poll, every);
})();
