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
