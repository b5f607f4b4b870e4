// TeleCoder dashboard: the little that htmx does not do. No build step, no inline script (CSP).
(function () {
  "use strict";

  function lastSeq(list) {
    return parseInt(list.getAttribute("data-last-seq") || "0", 10);
  }

  // An event stream that reconnects from scratch may send events the page already shows.
  document.addEventListener("htmx:sseBeforeMessage", function (evt) {
    var message = evt.detail;
    if (!message || message.type !== "event") return;
    var list = document.getElementById("events");
    if (!list) return;
    var seq = parseInt(message.lastEventId, 10);
    if (!seq) return;
    if (seq <= lastSeq(list)) {
      evt.preventDefault();
      return;
    }
    list.setAttribute("data-last-seq", String(seq));
    var nearBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
    list.setAttribute("data-follow", nearBottom ? "1" : "0");
  });

  // Keep following the log while the reader is at its end.
  document.addEventListener("htmx:sseMessage", function (evt) {
    var list = document.getElementById("events");
    if (list && evt.detail && evt.detail.type === "event" && list.getAttribute("data-follow") === "1") {
      window.scrollTo(0, document.body.scrollHeight);
    }
  });

  function setLive(on) {
    document.body.classList.toggle("live", on);
  }
  document.addEventListener("htmx:sseOpen", function () { setLive(true); });
  document.addEventListener("htmx:sseError", function () { setLive(false); });
  document.addEventListener("htmx:sseClose", function () { setLive(false); });

  // Ask before cancelling a running session.
  document.addEventListener("submit", function (evt) {
    var form = evt.target;
    if (form && form.action && /\/cancel$/.test(form.action) && !window.confirm("Cancel this session?")) {
      evt.preventDefault();
    }
  });
})();
