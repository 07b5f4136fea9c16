// Corral's dashboard: the little that needs a script. Every page reads without it.
//
// - A live log tail: an element with data-tail="URL" receives new lines over
//   Server-Sent Events (EventSource) and appends them; its pause button closes the
//   stream and resuming reopens it after the last line shown, so no line is missed.
// - Forms with data-confirm="question" ask before they post.
"use strict";

(function () {
  const KEEP = 2000; // lines kept on the page; older ones scroll away

  function tail(section) {
    const list = section.querySelector("ol.log");
    const state = section.querySelector(".live-state");
    const pause = section.querySelector("button[data-pause]");
    const empty = section.querySelector(".empty");
    let after = Number(section.dataset.after || "0");
    let source = null;
    let paused = false;

    function say(text, live) {
      if (state) {
        state.textContent = text;
        state.dataset.live = live;
      }
    }

    function append(line) {
      const item = document.createElement("li");
      item.dataset.id = String(line.id);
      const at = document.createElement("time");
      at.className = "meta";
      at.dateTime = line.at_iso;
      at.textContent = line.at;
      const who = document.createElement("span");
      who.className = "meta";
      const link = document.createElement("a");
      link.href = line.execution ? "/executions/" + line.execution : "/instances/" + line.instance;
      link.textContent = line.instance;
      who.append(link, " " + line.level);
      const text = document.createElement("span");
      text.className = "line lv-" + line.level;
      text.textContent = line.line;
      item.append(at, who, text);
      const atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
      list.append(item);
      while (list.children.length > KEEP) {
        list.firstElementChild.remove();
      }
      if (empty) {
        empty.hidden = true;
      }
      if (atBottom) {
        item.scrollIntoView({ block: "end" });
      }
    }

    function open() {
      const url = new URL(section.dataset.tail, window.location.href);
      url.searchParams.set("after", String(after));
      source = new EventSource(url.toString());
      source.addEventListener("open", function () {
        say("live", "on");
      });
      source.addEventListener("message", function (event) {
        const line = JSON.parse(event.data);
        if (line.id > after) {
          after = line.id;
          append(line);
        }
      });
      source.addEventListener("end", function () {
        say("the server is stopping; reconnecting…", "off");
      });
      source.addEventListener("error", function () {
        if (source && source.readyState === EventSource.CLOSED) {
          say("stopped: reload the page (you may need to sign in again)", "off");
        } else {
          say("reconnecting…", "off");
        }
      });
    }

    function close() {
      if (source) {
        source.close();
        source = null;
      }
    }

    if (pause) {
      pause.hidden = false;
      pause.addEventListener("click", function () {
        paused = !paused;
        if (paused) {
          close();
          pause.textContent = "Resume";
          pause.setAttribute("aria-pressed", "true");
          say("paused", "paused");
        } else {
          pause.textContent = "Pause";
          pause.setAttribute("aria-pressed", "false");
          open();
        }
      });
    }
    say("connecting…", "off");
    open();
    window.addEventListener("pagehide", close);
  }

  function confirming(form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) {
        event.preventDefault();
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-tail]").forEach(tail);
    document.querySelectorAll("form[data-confirm]").forEach(confirming);
  });
})();
