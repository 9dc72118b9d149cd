// Runs static/prodio.js in a fresh node:vm context per scenario, with a stubbed window
// (fetch, XMLHttpRequest, EventSource, document, timers, location), and prints what
// happened as JSON. tests/ui/test_prodio_js.py makes the assertions.
"use strict";

const fs = require("node:fs");
const vm = require("node:vm");

const source = fs.readFileSync(process.argv[2], "utf8");
const ORIGIN = "http://app.test";
const PAGE_PATH = "/app/";
const PAGE_SEARCH = "?tab=notes&x=1";

function json(status, body) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json" },
  });
}

function sessionInfo(idleSeconds, absoluteSeconds) {
  const now = Date.now();
  return {
    user: "alice",
    created_at: new Date(now - 5000).toISOString(),
    last_seen: new Date(now).toISOString(),
    idle_expires_at: new Date(now + idleSeconds * 1000).toISOString(),
    absolute_expires_at: new Date(now + absoluteSeconds * 1000).toISOString(),
    expires_at: new Date(now + Math.min(idleSeconds, absoluteSeconds) * 1000).toISOString(),
    idle_timeout: idleSeconds,
    csrf_token: "csrf-abc",
  };
}

// A tiny DOM: enough for prodio.js to build its notice and logout form.
function makeElement(tag) {
  const element = {
    tagName: tag.toUpperCase(),
    children: [],
    attributes: {},
    listeners: {},
    parentNode: null,
    textContent: "",
    submitted: false,
    setAttribute(name, value) {
      this.attributes[name] = String(value);
    },
    appendChild(child) {
      child.parentNode = this;
      this.children.push(child);
      return child;
    },
    removeChild(child) {
      this.children = this.children.filter((c) => c !== child);
      child.parentNode = null;
      return child;
    },
    addEventListener(type, fn) {
      (this.listeners[type] = this.listeners[type] || []).push(fn);
    },
    click() {
      (this.listeners.click || []).forEach((fn) => fn({ type: "click" }));
    },
    submit() {
      this.submitted = true;
    },
  };
  return element;
}

function describe(element) {
  return {
    tag: element.tagName,
    className: element.className || "",
    role: element.attributes.role || null,
    text: element.textContent,
    method: element.method,
    action: element.action,
    submitted: element.submitted,
    type: element.type,
    name: element.name,
    value: element.value,
    children: element.children.map(describe),
  };
}

function makeWindow(routes) {
  const calls = [];
  const assigned = [];
  const timers = [];
  const intervals = [];
  const body = makeElement("body");

  class FakeXHR {
    constructor() {
      this.listeners = {};
      this.readyState = 0;
      this.status = 0;
      this.responseType = "";
      this.responseText = "";
    }
    addEventListener(type, fn) {
      (this.listeners[type] = this.listeners[type] || []).push(fn);
    }
    open(method, url) {
      this.method = method;
      this.url = url;
      this.readyState = 1;
    }
    send() {
      const reply = routes(this.url, { method: this.method });
      setImmediate(async () => {
        this.status = reply.status;
        this.responseText = await reply.text();
        this.readyState = 4;
        (this.listeners.readystatechange || []).forEach((fn) => fn());
      });
    }
  }

  class FakeEventSource {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.listeners = {};
      FakeEventSource.instances.push(this);
    }
    addEventListener(type, fn) {
      (this.listeners[type] = this.listeners[type] || []).push(fn);
    }
    fail() {
      this.readyState = 2;
      (this.listeners.error || []).forEach((fn) => fn({ type: "error" }));
    }
  }
  FakeEventSource.instances = [];

  const sandbox = {
    URL,
    console,
    location: {
      href: ORIGIN + PAGE_PATH + PAGE_SEARCH,
      origin: ORIGIN,
      pathname: PAGE_PATH,
      search: PAGE_SEARCH,
      assign(url) {
        assigned.push(url);
      },
    },
    document: { body, createElement: makeElement },
    fetch(input, init) {
      const url = typeof input === "string" ? input : input.url;
      calls.push(url);
      return Promise.resolve(routes(url, init || {}));
    },
    XMLHttpRequest: FakeXHR,
    EventSource: FakeEventSource,
    setTimeout(fn, ms) {
      timers.push({ fn, ms });
      return timers.length;
    },
    clearTimeout(id) {
      if (id && timers[id - 1]) timers[id - 1].cleared = true;
    },
    setInterval(fn, ms) {
      intervals.push({ fn, ms });
      return intervals.length;
    },
    clearInterval(id) {
      if (id && intervals[id - 1]) intervals[id - 1].cleared = true;
    },
  };
  sandbox.window = sandbox;
  vm.createContext(sandbox);
  vm.runInContext(source, sandbox, { filename: "prodio.js" });
  return { window: sandbox, calls, assigned, timers, body, FakeEventSource };
}

function ticks(count) {
  let promise = Promise.resolve();
  for (let i = 0; i < count; i += 1) {
    promise = promise.then(() => new Promise((resolve) => setImmediate(resolve)));
  }
  return promise;
}

async function settles(promise) {
  return Promise.race([promise.then(() => true, () => true), ticks(30).then(() => false)]);
}

function defaultRoutes(overrides) {
  return (url, init) => {
    const path = new URL(url, ORIGIN).pathname + new URL(url, ORIGIN).search;
    for (const [prefix, reply] of overrides) {
      if (path.startsWith(prefix) || url.startsWith(prefix)) return reply(url, init);
    }
    if (path === "/api/session") return json(200, sessionInfo(1800, 28800));
    return json(200, { data: ["ok"] });
  };
}

const scenarios = {
  async fetch_401_redirects_to_login() {
    const w = makeWindow(
      defaultRoutes([
        [
          "/gradio_api/",
          () =>
            json(401, {
              detail: "not authenticated",
              login_url: "/login?next=%2Fgradio_api%2Frun%2Fpredict",
            }),
        ],
      ])
    );
    await ticks(5);
    const pending = w.window.fetch("/gradio_api/run/predict", { method: "POST" });
    const settled = await settles(pending);
    return { assigned: w.assigned, settled };
  },

  async fetch_401_without_json_body() {
    const w = makeWindow(
      defaultRoutes([["/gradio_api/", () => new Response("nope", { status: 401 })]])
    );
    await ticks(5);
    const settled = await settles(w.window.fetch(ORIGIN + "/gradio_api/info"));
    return { assigned: w.assigned, settled };
  },

  async fetch_200_does_not_redirect() {
    const w = makeWindow(defaultRoutes([]));
    await ticks(5);
    const response = await w.window.fetch("/gradio_api/run/predict", { method: "POST" });
    const body = await response.json();
    return { assigned: w.assigned, status: response.status, body };
  },

  async fetch_500_is_left_to_gradio() {
    const w = makeWindow(defaultRoutes([["/gradio_api/", () => json(500, { error: "boom" })]]));
    await ticks(5);
    const response = await w.window.fetch("/gradio_api/run/predict");
    return { assigned: w.assigned, status: response.status };
  },

  async cross_origin_401_is_left_alone() {
    const w = makeWindow(
      defaultRoutes([["https://other.example/", () => json(401, { login_url: "/login" })]])
    );
    await ticks(5);
    const response = await w.window.fetch("https://other.example/api");
    return { assigned: w.assigned, status: response.status };
  },

  async foreign_login_url_is_not_followed() {
    const w = makeWindow(
      defaultRoutes([
        [
          "/gradio_api/",
          () => json(401, { login_url: "https://evil.example/login?next=/steal" }),
        ],
      ])
    );
    await ticks(5);
    await settles(w.window.fetch("/gradio_api/run/predict"));
    return { assigned: w.assigned };
  },

  async custom_login_path_is_kept() {
    const w = makeWindow(
      defaultRoutes([["/gradio_api/", () => json(401, { login_url: "/auth/login?x=1" })]])
    );
    await ticks(5);
    await settles(w.window.fetch("/gradio_api/run/predict"));
    return { assigned: w.assigned };
  },

  async several_401s_redirect_once() {
    const w = makeWindow(defaultRoutes([["/gradio_api/", () => json(401, {})]]));
    await ticks(5);
    w.window.fetch("/gradio_api/a");
    w.window.fetch("/gradio_api/b");
    await ticks(20);
    return { assigned: w.assigned };
  },

  async xhr_401_redirects() {
    const w = makeWindow(
      defaultRoutes([["/gradio_api/upload", () => json(401, { login_url: "/login" })]])
    );
    await ticks(5);
    const xhr = new w.window.XMLHttpRequest();
    xhr.open("POST", "/gradio_api/upload");
    xhr.send();
    await ticks(10);
    return { assigned: w.assigned };
  },

  async xhr_200_does_not_redirect() {
    const w = makeWindow(defaultRoutes([]));
    await ticks(5);
    const xhr = new w.window.XMLHttpRequest();
    xhr.open("POST", "/gradio_api/upload");
    xhr.send();
    await ticks(10);
    return { assigned: w.assigned, status: xhr.status };
  },

  async event_source_error_checks_the_session() {
    let signedIn = true;
    const w = makeWindow(
      defaultRoutes([
        [
          "/api/session",
          () => (signedIn ? json(200, sessionInfo(1800, 28800)) : json(401, { login_url: "/login" })),
        ],
      ])
    );
    await ticks(5);
    const source = new w.window.EventSource("/gradio_api/stream");
    signedIn = false;
    w.FakeEventSource.instances[0].fail();
    await ticks(10);
    return { assigned: w.assigned, wrapped: source instanceof w.FakeEventSource };
  },

  async logout_posts_the_csrf_form() {
    const w = makeWindow(defaultRoutes([]));
    await ticks(5);
    await w.window.prodio.logout();
    const forms = w.body.children.filter((c) => c.tagName === "FORM").map(describe);
    return { forms, assigned: w.assigned };
  },

  async logout_falls_back_to_the_confirmation_page() {
    const w = makeWindow(defaultRoutes([["/api/session", () => json(503, { detail: "down" })]]));
    await ticks(5);
    await w.window.prodio.logout();
    return {
      assigned: w.assigned,
      forms: w.body.children.filter((c) => c.tagName === "FORM").length,
    };
  },

  async idle_notice_and_stay_signed_in() {
    const w = makeWindow(defaultRoutes([["/api/session", () => json(200, sessionInfo(120, 28800))]]));
    await ticks(10);
    const live = () => w.timers.filter((t) => !t.cleared);
    const delays = live().map((t) => t.ms).sort((a, b) => a - b);
    // Fire the earliest live timer: the notice.
    const noticeTimer = live().sort((a, b) => a.ms - b.ms)[0];
    noticeTimer.fn();
    const shown = w.body.children.map(describe);
    const sessionCallsBefore = w.calls.filter((u) => u === "/api/session").length;
    const notice = w.body.children[0];
    const button = notice.children.find((c) => c.tagName === "BUTTON");
    button.click();
    await ticks(10);
    const sessionCallsAfter = w.calls.filter((u) => u === "/api/session").length;
    return {
      delays,
      shown,
      sessionCallsBefore,
      sessionCallsAfter,
      remaining: w.body.children.length,
      assigned: w.assigned,
    };
  },

  async absolute_end_notice_has_no_stay_button() {
    const w = makeWindow(defaultRoutes([["/api/session", () => json(200, sessionInfo(1800, 90))]]));
    await ticks(10);
    const timer = w.timers.filter((t) => !t.cleared).sort((a, b) => a.ms - b.ms)[0];
    timer.fn();
    return { shown: w.body.children.map(describe) };
  },

  async activity_hides_the_idle_notice() {
    const w = makeWindow(defaultRoutes([["/api/session", () => json(200, sessionInfo(120, 28800))]]));
    await ticks(10);
    w.timers.filter((t) => !t.cleared).sort((a, b) => a.ms - b.ms)[0].fn();
    const before = w.body.children.length;
    await w.window.fetch("/gradio_api/run/predict");
    const liveDelays = w.timers.filter((t) => !t.cleared).map((t) => t.ms);
    return { before, after: w.body.children.length, liveDelays };
  },

  async loaded_twice_installs_once() {
    const w = makeWindow(defaultRoutes([]));
    const first = w.window.fetch;
    vm.runInContext(source, w.window, { filename: "prodio.js" });
    return { same: first === w.window.fetch };
  },
};

(async () => {
  const results = {};
  for (const [name, run] of Object.entries(scenarios)) {
    try {
      results[name] = { ok: true, value: await run() };
    } catch (error) {
      results[name] = { ok: false, error: String(error && error.stack ? error.stack : error) };
    }
  }
  process.stdout.write(JSON.stringify(results));
})();
