// Shared by every staff page: CSRF header for fetch, the inactivity countdown.
"use strict";
(function () {
  const meta = document.querySelector('meta[name="csrf-token"]');
  window.csrfToken = meta ? meta.content : "";
  // fetch() for the page's own background requests: CSRF header, no activity counted,
  // and a signed-out session sends the browser to the sign-in page.
  window.backgroundFetch = async function (url, options) {
    const opts = Object.assign({ credentials: "same-origin" }, options || {});
    opts.headers = Object.assign({ "X-Background": "1", "X-CSRF-Token": window.csrfToken },
      opts.headers || {});
    const response = await fetch(url, opts);
    if (response.status === 401) {
      window.location.assign("/login?ended=idle&next=" + encodeURIComponent(location.pathname));
      throw new Error("signed out");
    }
    return response;
  };
})();

// The inactivity countdown in the top bar ("Signing out in 14:32"). Only the server
// decides when a session ends: when the countdown runs out it asks the server, which
// either says the session is gone (backgroundFetch then goes to the sign-in page) or says
// how long is left (another tab was used, or this machine's clock is off) and it goes on.
(function () {
  const SOON_MS = 2 * 60 * 1000;
  const element = document.getElementById("idle");
  if (!element) return;
  const idleMs = parseFloat(element.dataset.idleMinutes || "15") * 60 * 1000;
  let deadline = 0; // on performance.now()'s clock, which this machine's clock changes can't move
  let timer = 0;
  let checking = false;

  function restart(remainingMs) {
    // Clamped: a clock behind the server's would otherwise show more than the whole window.
    deadline = performance.now() + Math.max(0, Math.min(remainingMs, idleMs));
    tick();
  }

  function show(ms) {
    const seconds = Math.ceil(ms / 1000);
    const minutes = Math.floor(seconds / 60);
    const rest = String(seconds % 60).padStart(2, "0");
    element.textContent = "Signing out in " + minutes + ":" + rest;
    element.classList.toggle("soon", ms <= SOON_MS);
  }

  async function check() {
    checking = true;
    try {
      const response = await window.backgroundFetch("/session/status");
      if (!response.ok) throw new Error("status " + response.status);
      const status = await response.json();
      if (status.remaining_seconds > 0) {
        restart(status.remaining_seconds * 1000);
      } else {
        goToSignIn();
      }
    } catch (error) {
      // backgroundFetch has already navigated on 401; anything else (offline, 500) must
      // not leave a screen with patient context up: the sign-in page is the safe side.
      if (String(error && error.message) !== "signed out") goToSignIn();
    } finally {
      checking = false;
    }
  }

  function goToSignIn() {
    window.location.assign("/login?ended=idle&next=" + encodeURIComponent(location.pathname));
  }

  function tick() {
    window.clearTimeout(timer);
    const left = deadline - performance.now();
    if (left <= 0) {
      show(0);
      if (!checking) check();
      return;
    }
    show(left);
    // Wake on the next whole second; a throttled background tab catches up when it wakes.
    timer = window.setTimeout(tick, (left % 1000) || 1000);
  }

  // Page-driven fetches that do count as activity (no X-Background) can say so.
  window.idleCountdown = { restart: function () { restart(idleMs); } };

  const expiresAt = Date.parse(element.dataset.expiresAt || "");
  restart(Number.isNaN(expiresAt) ? idleMs : expiresAt - Date.now());
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) tick();
  });
})();
