// The Call panel: one press per form, and the attempt's status kept live while it runs.
"use strict";
(function () {
  const POLL_MS = 2000;
  // A call whose callbacks never come (a lost webhook) must not poll forever.
  const GIVE_UP_MS = 65 * 60 * 1000;

  function setup() {
    document.querySelectorAll("[data-call-form]").forEach(function (form) {
      form.addEventListener("submit", function () {
        // The server places one call per form anyway (the nonce); this spares the agent
        // wondering whether the second click did something.
        const button = form.querySelector("button[type=submit]");
        if (button) {
          setTimeout(function () { button.disabled = true; }, 0);
        }
      });
      const override = form.querySelector("[data-call-override]");
      const reason = form.querySelector("[data-call-override-reason]");
      if (override && reason) {
        const sync = function () { reason.disabled = !override.checked; };
        override.addEventListener("change", sync);
        sync();
      }
    });
    document.querySelectorAll(".call-status[data-status-url]").forEach(watch);
  }

  function render(area, attempt) {
    area.dataset.status = attempt.status;
    area.dataset.ended = attempt.ended ? "true" : "false";
    const label = area.querySelector("[data-call-label]");
    if (label) { label.textContent = attempt.label; }
    const error = area.querySelector("[data-call-error]");
    if (error) { error.textContent = attempt.error || ""; }
  }

  // The panel was drawn while the call ran ("under way", Call disabled). Another call needs
  // a fresh one-time form, so it is offered as a reload, which also keeps a note the agent
  // is typing from being thrown away by surprise.
  function offerAnotherCall(area) {
    const panel = area.closest("[data-testid=call-panel]");
    const reason = panel && panel.querySelector("[data-testid=call-reason]");
    if (!reason || panel.querySelector("[data-call-again]")) { return; }
    reason.textContent = "The call has ended. ";
    const again = document.createElement("a");
    again.href = window.location.pathname + "#call-panel";
    again.textContent = "Call again";
    again.dataset.callAgain = "";
    again.addEventListener("click", function (event) {
      event.preventDefault();
      window.location.reload();
    });
    reason.appendChild(again);
  }

  function watch(area) {
    if (area.dataset.ended === "true") { return; }
    const started = Date.now();
    const tick = async function () {
      let attempt;
      try {
        const response = await window.backgroundFetch(area.dataset.statusUrl,
          { headers: { "Accept": "application/json" } });
        if (!response.ok) { throw new Error("status " + response.status); }
        attempt = await response.json();
      } catch (err) {
        if (err && err.message === "signed out") { return; }
        attempt = null; // a network blip: try again at the next tick
      }
      if (attempt) {
        const before = area.dataset.status;
        render(area, attempt);
        if (attempt.status !== before) {
          area.dispatchEvent(new CustomEvent("call:status",
            { bubbles: true, detail: attempt }));
        }
        if (attempt.ended) {
          offerAnotherCall(area);
          // The task page reloads its timeline (and offers the outcome form) on this.
          area.dispatchEvent(new CustomEvent("call:ended", { bubbles: true, detail: attempt }));
          return;
        }
      }
      if (Date.now() - started < GIVE_UP_MS) { setTimeout(tick, POLL_MS); }
    };
    setTimeout(tick, POLL_MS);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setup);
  } else {
    setup();
  }
})();
