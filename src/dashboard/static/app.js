// gitgate dashboard: live refresh of the page's <main> and table filters.
// Plain JS, no dependencies, nothing loaded from the internet.
(function () {
  "use strict";

  function wireFilters(root) {
    root.querySelectorAll("input.filter[data-table]").forEach(function (input) {
      var table = document.getElementById(input.dataset.table);
      if (!table) return;
      var apply = function () {
        var q = input.value.trim().toLowerCase();
        table.querySelectorAll("tbody tr").forEach(function (tr) {
          tr.hidden = q !== "" && tr.textContent.toLowerCase().indexOf(q) < 0;
        });
      };
      input.addEventListener("input", apply);
      apply();
    });
  }

  var live = document.getElementById("live");
  if (live) {
    live.checked = localStorage.getItem("gitgate-live") !== "off";
    live.addEventListener("change", function () {
      localStorage.setItem("gitgate-live", live.checked ? "on" : "off");
    });
  }

  var busy = false;
  function refresh() {
    if (!live || !live.checked || busy || document.hidden) return;
    var focused = document.activeElement;
    if (focused && focused.matches("input, select, textarea")) return; // don't pull the page from under a user typing
    busy = true;
    fetch(location.href, { headers: { Accept: "text/html" }, cache: "no-store" })
      .then(function (r) {
        // Signed out or the login expired: show the login page.
        if (r.status === 401) { location.reload(); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (text) {
        if (!text) return;
        var doc = new DOMParser().parseFromString(text, "text/html");
        var fresh = doc.getElementById("main");
        var current = document.getElementById("main");
        if (!fresh || !current) return;
        // Keep what the user typed into table filters.
        var typed = {};
        current.querySelectorAll("input.filter[data-table]").forEach(function (i) { typed[i.dataset.table] = i.value; });
        current.replaceWith(fresh);
        fresh.querySelectorAll("input.filter[data-table]").forEach(function (i) { i.value = typed[i.dataset.table] || ""; });
        wireFilters(fresh);
        document.body.dataset.refreshed = String(Date.now());
      })
      .catch(function () { /* the next tick retries */ })
      .finally(function () { busy = false; });
  }

  wireFilters(document);
  setInterval(refresh, 2000);
})();
