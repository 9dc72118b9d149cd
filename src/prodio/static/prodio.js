/*
 * prodio.js: loaded into the Gradio page by prodio.
 *
 * 1. Signed out? Go to the login page. Any same-origin fetch, XMLHttpRequest or
 *    EventSource that meets a 401 sends the browser to /login?next=<this page> instead of
 *    letting Gradio show an error toast.
 * 2. window.prodio.logout(): POST /logout with the CSRF token from GET /api/session.
 * 3. A minute before the session would end, a notice offers "Stay signed in".
 *
 * No dependencies, no network calls other than to this site.
 */
(function (global) {
  "use strict";

  if (global.prodio && global.prodio.installed) {
    return;
  }

  var LOGIN_PATH = "/login";
  var SESSION_URL = "/api/session";
  var LOGOUT_URL = "/logout";
  var NOTICE_LEAD_MS = 60 * 1000;
  // The local deadline already trails the server's (it starts when the answer arrives): a
  // short grace is enough for the session to be gone when the login page is asked for.
  var EXPIRY_GRACE_MS = 250;
  var MAX_TIMER_MS = 2147483647;
  // Paths the auth middleware lets through without a session: no activity on the session.
  var PUBLIC_PREFIXES = ["/static/", "/favicon.ico", "/manifest.json", LOGIN_PATH];

  var location = global.location;
  var doc = global.document;
  var nativeFetch = typeof global.fetch === "function" ? global.fetch.bind(global) : null;
  var redirecting = false;

  // ------------------------------------------------------------------ where to sign in

  function currentPath() {
    return location.pathname + (location.search || "");
  }

  function parseUrl(url) {
    try {
      return new URL(String(url), location.href);
    } catch (error) {
      return null;
    }
  }

  function isSameOrigin(url) {
    var parsed = parseUrl(url);
    return parsed !== null && parsed.origin === location.origin;
  }

  function isPublicPath(url) {
    var parsed = parseUrl(url);
    if (parsed === null) {
      return true;
    }
    return PUBLIC_PREFIXES.some(function (prefix) {
      return parsed.pathname === prefix || parsed.pathname.indexOf(prefix) === 0;
    });
  }

  /*
   * The login URL for a 401 body. The server's login_url may carry extra parameters or
   * a different login path, so it is used; but its `next` names the request that failed
   * (an API call), so `next` is replaced by the page the user is on. Only a same-origin
   * login_url is followed: a response must not be able to send the user elsewhere.
   */
  function loginUrl(body) {
    var target = null;
    if (body && typeof body.login_url === "string") {
      var parsed = parseUrl(body.login_url);
      if (parsed !== null && parsed.origin === location.origin) {
        target = parsed;
      }
    }
    if (target === null) {
      target = new URL(LOGIN_PATH, location.href);
    }
    target.searchParams.set("next", currentPath());
    return target.pathname + target.search;
  }

  function goToLogin(url) {
    if (redirecting) {
      return;
    }
    redirecting = true;
    location.assign(url);
  }

  function onUnauthorized(body) {
    goToLogin(loginUrl(body));
  }

  function requestUrl(input) {
    if (typeof input === "string") {
      return input;
    }
    if (input && typeof input.url === "string") {
      return input.url;
    }
    return String(input);
  }

  // -------------------------------------------------------------------------- fetch

  if (nativeFetch) {
    global.fetch = function prodioFetch(input, init) {
      var url = requestUrl(input);
      return nativeFetch(input, init).then(function (response) {
        if (!isSameOrigin(url)) {
          return response;
        }
        if (response.status === 401) {
          return response
            .clone()
            .json()
            .then(onUnauthorized, function () {
              onUnauthorized(null);
            })
            .then(function () {
              // The page is leaving: never settle, so Gradio shows no error meanwhile.
              return new Promise(function () {});
            });
        }
        if (response.ok && !isPublicPath(url)) {
          sessionClock.activity();
        }
        return response;
      });
    };
  }

  // ----------------------------------------------------------------- XMLHttpRequest

  var NativeXHR = global.XMLHttpRequest;
  if (NativeXHR && NativeXHR.prototype) {
    var nativeOpen = NativeXHR.prototype.open;
    var nativeSend = NativeXHR.prototype.send;

    NativeXHR.prototype.open = function (method, url) {
      this.__prodioUrl = String(url);
      return nativeOpen.apply(this, arguments);
    };

    NativeXHR.prototype.send = function () {
      var xhr = this;
      var url = xhr.__prodioUrl || "";
      if (isSameOrigin(url)) {
        xhr.addEventListener("readystatechange", function () {
          if (xhr.readyState !== 4) {
            return;
          }
          if (xhr.status === 401) {
            onUnauthorized(xhrJson(xhr));
          } else if (xhr.status >= 200 && xhr.status < 300 && !isPublicPath(url)) {
            sessionClock.activity();
          }
        });
      }
      return nativeSend.apply(this, arguments);
    };
  }

  function xhrJson(xhr) {
    try {
      if (xhr.responseType === "json") {
        return xhr.response;
      }
      if (!xhr.responseType || xhr.responseType === "text") {
        return JSON.parse(xhr.responseText);
      }
    } catch (error) {
      // Not JSON: fall back to the default login URL.
    }
    return null;
  }

  // -------------------------------------------------------------------- EventSource

  var NativeEventSource = global.EventSource;
  if (typeof NativeEventSource === "function") {
    /*
     * An EventSource cannot see status codes. When one closes on an error, ask the
     * session endpoint (through the wrapped fetch): a 401 there means we are signed out.
     */
    var ProdioEventSource = function (url, config) {
      var source = new NativeEventSource(url, config);
      if (isSameOrigin(url)) {
        source.addEventListener("error", function () {
          if (source.readyState === 2) {
            fetchSession().catch(function () {});
          }
        });
      }
      return source;
    };
    ProdioEventSource.prototype = NativeEventSource.prototype;
    ProdioEventSource.CONNECTING = 0;
    ProdioEventSource.OPEN = 1;
    ProdioEventSource.CLOSED = 2;
    global.EventSource = ProdioEventSource;
  }

  // ------------------------------------------------------------------------- session

  function fetchSession() {
    // Through the wrapped fetch: a 401 redirects. This also resets the idle timer.
    return global
      .fetch(SESSION_URL, {
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "application/json" },
      })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("GET " + SESSION_URL + " answered " + response.status);
        }
        return response.json();
      })
      .then(function (info) {
        sessionClock.update(info);
        return info;
      });
  }

  function submitLogoutForm(csrfToken) {
    var form = doc.createElement("form");
    form.method = "post";
    form.action = LOGOUT_URL;
    form.hidden = true;
    var field = doc.createElement("input");
    field.type = "hidden";
    field.name = "csrf_token";
    field.value = csrfToken;
    form.appendChild(field);
    doc.body.appendChild(form);
    form.submit();
  }

  function logout() {
    return fetchSession()
      .then(function (info) {
        if (!info || typeof info.csrf_token !== "string" || !info.csrf_token) {
          throw new Error("no CSRF token in " + SESSION_URL);
        }
        submitLogoutForm(info.csrf_token);
      })
      .catch(function () {
        // The confirmation page works without this script.
        location.assign(LOGOUT_URL);
      });
  }

  // ------------------------------------------------------------- the session clock

  /*
   * Deadlines are kept in this browser's clock: the server's times are turned into
   * "milliseconds from now" using last_seen (which GET /api/session sets to the server's
   * now), so a wrong clock on either side does not matter.
   */
  var sessionClock = {
    idleTimeoutMs: null,
    idleDeadline: null,
    absoluteDeadline: null,
    noticeTimer: null,
    expiryTimer: null,
    countdownTimer: null,
    notice: null,

    update: function (info) {
      var serverNow = Date.parse(info && info.last_seen);
      var idleAt = Date.parse(info && info.idle_expires_at);
      var absoluteAt = Date.parse(info && info.absolute_expires_at);
      if (!isFinite(serverNow) || !isFinite(idleAt) || !isFinite(absoluteAt)) {
        return;
      }
      var now = Date.now();
      this.idleTimeoutMs = typeof info.idle_timeout === "number" ? info.idle_timeout * 1000 : null;
      this.idleDeadline = now + (idleAt - serverNow);
      this.absoluteDeadline = now + (absoluteAt - serverNow);
      this.hideNotice();
      this.schedule(now);
    },

    activity: function () {
      if (this.idleTimeoutMs === null) {
        return;
      }
      // Every authenticated request moved the server's idle expiry too.
      var now = Date.now();
      this.idleDeadline = now + this.idleTimeoutMs;
      if (this.notice && !this.endsAbsolutely()) {
        this.hideNotice();
      }
      this.schedule(now);
    },

    deadline: function () {
      return Math.min(this.idleDeadline, this.absoluteDeadline);
    },

    endsAbsolutely: function () {
      return this.absoluteDeadline <= this.idleDeadline;
    },

    schedule: function (now) {
      var self = this;
      global.clearTimeout(this.noticeTimer);
      global.clearTimeout(this.expiryTimer);
      this.noticeTimer = global.setTimeout(function () {
        self.showNotice();
      }, clampDelay(this.deadline() - NOTICE_LEAD_MS - now));
      this.expiryTimer = global.setTimeout(function () {
        self.expire();
      }, clampDelay(this.deadline() + EXPIRY_GRACE_MS - now));
    },

    expire: function () {
      var now = Date.now();
      if (now < this.deadline()) {
        this.schedule(now);
        return;
      }
      onUnauthorized(null);
    },

    secondsLeft: function () {
      return Math.max(0, Math.ceil((this.deadline() - Date.now()) / 1000));
    },

    message: function () {
      var seconds = this.secondsLeft();
      var when = seconds === 1 ? "1 second" : seconds + " seconds";
      if (this.endsAbsolutely()) {
        return "Your session ends in " + when + ". Save your work: you will need to sign in again.";
      }
      return "You will be signed out in " + when + " because of inactivity.";
    },

    showNotice: function () {
      if (!doc || !doc.body || this.notice || redirecting) {
        return;
      }
      var self = this;
      var notice = doc.createElement("div");
      notice.className = "prodio-notice";
      notice.setAttribute("role", "alert");
      var text = doc.createElement("p");
      text.className = "prodio-notice-text";
      text.textContent = this.message();
      notice.appendChild(text);

      var button = doc.createElement("button");
      button.type = "button";
      button.className = "prodio-button prodio-button-primary";
      if (this.endsAbsolutely()) {
        button.textContent = "Dismiss";
        button.addEventListener("click", function () {
          self.hideNotice();
        });
      } else {
        button.textContent = "Stay signed in";
        button.addEventListener("click", function () {
          button.disabled = true;
          staySignedIn().then(
            function () {
              button.disabled = false;
            },
            function () {
              button.disabled = false;
            }
          );
        });
      }
      notice.appendChild(button);
      doc.body.appendChild(notice);
      this.notice = notice;
      this.countdownTimer = global.setInterval(function () {
        text.textContent = self.message();
      }, 1000);
    },

    hideNotice: function () {
      global.clearInterval(this.countdownTimer);
      this.countdownTimer = null;
      if (this.notice && this.notice.parentNode) {
        this.notice.parentNode.removeChild(this.notice);
      }
      this.notice = null;
    },
  };

  function clampDelay(ms) {
    return Math.min(Math.max(0, ms), MAX_TIMER_MS);
  }

  function staySignedIn() {
    return fetchSession();
  }

  global.prodio = {
    installed: true,
    logout: logout,
    staySignedIn: staySignedIn,
    loginUrl: loginUrl,
    sessionClock: sessionClock,
  };

  // Learn the session's deadlines once the page is up (a 401 here redirects at once).
  fetchSession().catch(function () {});
})(typeof window !== "undefined" ? window : globalThis);
