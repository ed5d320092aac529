// The task page: keeps the status and timeline fresh, the script's blanks in step, and the
// outcome form's next-action time required only for the outcomes that need one.
"use strict";
(function () {
  const REFRESH_MS = 5000;
  const live = document.getElementById("task-live");

  // --- live status and timeline ---------------------------------------------------------
  let lastHtml = null;
  let inFlight = false;

  function playing(area) {
    // Replacing the timeline would stop a voicemail someone is listening to.
    return Array.from(area.querySelectorAll("audio")).some((audio) => !audio.paused);
  }

  async function refresh() {
    if (!live || inFlight || document.hidden || playing(live)) return;
    inFlight = true;
    try {
      const response = await window.backgroundFetch(live.dataset.liveUrl, {
        headers: { Accept: "application/json" },
      });
      if (!response.ok) return;
      const body = await response.json();
      if (body.html !== lastHtml && !playing(live)) {
        live.innerHTML = body.html;
        lastHtml = body.html;
        live.dispatchEvent(new CustomEvent("task:refreshed", { bubbles: true, detail: body }));
      }
    } catch (error) {
      // Signed out (backgroundFetch navigates away) or a network blip: try next time.
    } finally {
      inFlight = false;
    }
  }

  if (live) {
    window.setInterval(refresh, REFRESH_MS);
    document.addEventListener("call:ended", refresh);
    document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
  }

  // --- script blanks: typing a day in one place fills it everywhere ------------------------
  document.addEventListener("input", (event) => {
    const input = event.target;
    if (!(input instanceof HTMLInputElement) || !input.classList.contains("blank")) return;
    document.querySelectorAll('input.blank[data-blank="' + input.dataset.blank + '"]')
      .forEach((other) => {
        if (other !== input) other.value = input.value;
      });
    input.classList.toggle("filled", input.value.trim() !== "");
  });

  // --- outcome form ---------------------------------------------------------------------
  const form = document.getElementById("outcome-form");
  if (form) {
    const next = form.querySelector('input[name="next_action_at"]');
    const nextBlock = form.querySelector("[data-next-time]");
    const sync = () => {
      const chosen = form.querySelector('input[name="disposition"]:checked');
      const needs = chosen && chosen.dataset.needsTime === "true";
      const closing = chosen && chosen.dataset.closing === "true";
      if (next) next.required = Boolean(needs);
      if (nextBlock) nextBlock.hidden = Boolean(closing);
    };
    form.addEventListener("change", sync);
    sync();
    form.addEventListener("submit", () => {
      const button = form.querySelector('button[type="submit"]');
      // One outcome per press; the server re-renders the form if it is refused.
      if (button) window.setTimeout(() => { button.disabled = true; }, 0);
    });
  }
})();
