// The queue page: live SLA countdowns (every second) and the table's refresh (every 5 s).
"use strict";
(function () {
  const table = document.getElementById("queue");
  const body = document.getElementById("queue-rows");
  if (!table || !body) return;
  const REFRESH_MS = 5000;
  // The server's clock minus this browser's: a front-desk PC that is minutes off must
  // still turn a row red when the deadline passes by the server's reckoning.
  let skew = 0;

  function setSkew(iso) {
    const server = Date.parse(iso);
    if (!Number.isNaN(server)) skew = server - Date.now();
  }

  function pad(n) {
    return String(n).padStart(2, "0");
  }

  // As services.queue.countdown_text: "12:04", "2:05:09", "3 d 4 h", "overdue …".
  function format(leftMs) {
    const overdue = leftMs <= 0;
    const seconds = Math.trunc(Math.abs(leftMs) / 1000);
    const days = Math.floor(seconds / 86400);
    const hours = Math.floor((seconds % 86400) / 3600);
    const minutes = Math.floor((seconds % 3600) / 60);
    const secs = seconds % 60;
    let text;
    if (days) text = days + " d " + hours + " h";
    else if (hours) text = hours + ":" + pad(minutes) + ":" + pad(secs);
    else text = pad(minutes) + ":" + pad(secs);
    return overdue ? "overdue " + text : text;
  }

  function tick() {
    const now = Date.now() + skew;
    body.querySelectorAll(".countdown[data-due-at]").forEach(function (el) {
      const left = Date.parse(el.dataset.dueAt) - now;
      if (Number.isNaN(left)) return;
      el.textContent = format(left);
      el.classList.toggle("overdue", left <= 0);
      const row = el.closest("tr");
      if (row) row.classList.toggle("is-overdue", left <= 0);
    });
  }

  function showCounts(counts) {
    Object.keys(counts || {}).forEach(function (name) {
      const el = document.querySelector('[data-count="' + name + '"]');
      if (el) el.textContent = counts[name];
    });
  }

  function showNext(url) {
    const holder = document.getElementById("next-page");
    if (!holder) return;
    holder.textContent = "";
    if (!url) return;
    const link = document.createElement("a");
    link.href = url;
    link.dataset.testid = "next-page";
    link.textContent = "Next page";
    holder.appendChild(link);
  }

  let busy = false;
  async function refresh() {
    // A hidden tab does not poll; it catches up when shown again.
    if (busy || document.hidden) return;
    busy = true;
    try {
      const response = await window.backgroundFetch(table.dataset.rowsUrl, {
        headers: { Accept: "application/json" },
      });
      if (!response.ok) return;
      const data = await response.json();
      setSkew(data.server_now);
      body.innerHTML = data.html;
      showCounts(data.counts);
      showNext(data.next_url);
      tick();
      table.dataset.refreshedAt = new Date().toISOString();
    } catch (error) {
      // Offline for a moment: the next refresh tries again; the countdowns keep running.
    } finally {
      busy = false;
    }
  }

  setSkew(table.dataset.serverNow);
  tick();
  setInterval(tick, 1000);
  setInterval(refresh, REFRESH_MS);
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) refresh();
  });
})();

// "Take next" sends one press: a double click must not claim two tasks (the server also
// answers a repeated press with the first one's task). A page brought back from the
// back/forward cache gets its button back and a new press id.
(function () {
  const form = document.querySelector("form.take-next");
  if (!form) return;
  const button = form.querySelector("button[type=submit]");
  const nonce = form.querySelector("input[name=nonce]");
  form.addEventListener("submit", function (event) {
    if (form.dataset.sent === "1") {
      event.preventDefault();
      return;
    }
    form.dataset.sent = "1";
    // Disabled after this event, so the submission it starts is not cancelled.
    window.setTimeout(function () {
      if (button) button.disabled = true;
    }, 0);
  });
  window.addEventListener("pageshow", function (event) {
    if (!event.persisted) return;
    delete form.dataset.sent;
    if (button) button.disabled = false;
    if (nonce) {
      const bytes = new Uint8Array(16);
      window.crypto.getRandomValues(bytes);
      nonce.value = Array.from(bytes, function (b) {
        return b.toString(16).padStart(2, "0");
      }).join("");
    }
  });
})();
