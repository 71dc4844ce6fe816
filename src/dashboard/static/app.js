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

  // Promotion actions: JSON POSTs to this origin (the login cookie is
  // SameSite=Strict; a cross-site form cannot send JSON). The server
  // decides who may; its answer is shown as it is.
  var holding = false; // a diff on screen: the live refresh waits
  function diffText(d) {
    var lines = ["diff of app " + d.app + " at " + d.commit + ": " + d.objects.length + " to change, " + d.unchanged + " unchanged"];
    d.objects.forEach(function (o) {
      lines.push("");
      lines.push(o.change + " " + o.id + (o.file ? " (" + o.file + ")" : "") + (o.secret ? " [Secret: values not shown]" : ""));
      if (o.diff) lines.push(o.diff);
    });
    return lines.join("\n");
  }
  document.addEventListener("click", function (ev) {
    var btn = ev.target.closest("button.promote, button.diff");
    if (!btn) return;
    var box = btn.closest(".actions");
    var out = box && box.querySelector(".action-result");
    var app = encodeURIComponent(btn.dataset.app);
    if (btn.classList.contains("diff")) {
      var pre = box.querySelector("pre.diff-out");
      fetch("/api/v1/apps/" + app + "/diff?commit=" + encodeURIComponent(btn.dataset.commit), { cache: "no-store" })
        .then(function (r) { return r.json().then(function (j) { return { ok: r.ok, j: j }; }); })
        .then(function (x) {
          holding = true;
          pre.hidden = false;
          pre.textContent = x.ok ? diffText(x.j) : ("refused: " + (x.j.error || ""));
        })
        .catch(function (e) { pre.hidden = false; pre.textContent = "failed: " + e; });
      return;
    }
    var body = btn.dataset.action === "approve" ? { commit: btn.dataset.commit } : {};
    btn.disabled = true;
    fetch("/api/v1/apps/" + app + "/" + btn.dataset.action, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    })
      .then(function (r) { return r.json().then(function (j) { return { ok: r.ok, j: j }; }); })
      .then(function (x) {
        if (out) out.textContent = x.ok ? x.j.message : ("refused: " + (x.j.error || ""));
        document.body.dataset.action = x.ok ? "done" : "refused";
        holding = false;
      })
      .catch(function (e) { if (out) out.textContent = "failed: " + e; })
      .finally(function () { btn.disabled = false; });
  });

  var busy = false;
  function refresh() {
    if (!live || !live.checked || busy || document.hidden || holding) return;
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
