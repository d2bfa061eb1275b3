// keyplane's GraphiQL start-up, a file of its own: the page's Content-Security-Policy allows
// scripts from this server only, and no inline script. It reads its settings from the page's
// JSON block (#graphiql-config: the example query and the header template), and keeps pasted
// credentials out of the browser's storage (see scrubbedStorage).
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("graphiql-config").textContent);
  var url = window.location.origin + window.location.pathname;
  var base = GraphiQL.createFetcher({ url: url });

  // The template's own Authorization value is not a credential: a request that still carries it
  // goes out without it (and runs anonymously) rather than failing with 401, so that the
  // schema loads and the example query runs before a key is pasted.
  function fetcher(params, options) {
    var headers = Object.assign({}, options && options.headers);
    Object.keys(headers).forEach(function (name) {
      if (headers[name] === config.placeholderAuthorization) {
        delete headers[name];
      }
    });
    return base(params, Object.assign({}, options, { headers: headers }));
  }

  // GraphiQL keeps its tabs, history and favourites in localStorage. With shouldPersistHeaders
  // false it leaves the headers out of the tabs, but its history keeps every run's headers
  // anyway. This storage drops any "headers" it is given before anything is written, and gives
  // restored tabs the template back instead.
  var NAMESPACE = "graphiql:";
  var SCRUBBED = { "graphiql:tabState": true, "graphiql:queries": true, "graphiql:favorites": true };

  function withoutHeaders(key, value) {
    return key === "headers" ? null : value;
  }

  function withTemplate(text) {
    try {
      var state = JSON.parse(text);
      (state.tabs || []).forEach(function (tab) {
        if (tab.headers === null || tab.headers === undefined) {
          tab.headers = config.defaultHeaders;
        }
      });
      return JSON.stringify(state);
    } catch (error) {
      return text;
    }
  }

  var scrubbedStorage = {
    getItem: function (key) {
      var value = window.localStorage.getItem(key);
      return key === "graphiql:tabState" && value ? withTemplate(value) : value;
    },
    setItem: function (key, value) {
      if (key === "graphiql:headers") {
        window.localStorage.removeItem(key);
        return;
      }
      if (SCRUBBED[key]) {
        try {
          value = JSON.stringify(JSON.parse(value), withoutHeaders);
        } catch (error) {
          return; // not the JSON expected: keep nothing rather than something unchecked
        }
      }
      window.localStorage.setItem(key, value);
    },
    removeItem: function (key) {
      window.localStorage.removeItem(key);
    },
    clear: function () {
      Object.keys(window.localStorage).forEach(function (key) {
        if (key.indexOf(NAMESPACE) === 0) {
          window.localStorage.removeItem(key);
        }
      });
    },
    get length() {
      return Object.keys(window.localStorage).filter(function (key) {
        return key.indexOf(NAMESPACE) === 0;
      }).length;
    },
  };

  ReactDOM.createRoot(document.getElementById("graphiql")).render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: config.defaultQuery,
      defaultHeaders: config.defaultHeaders,
      defaultEditorToolsVisibility: "headers",
      shouldPersistHeaders: false,
      storage: scrubbedStorage,
    })
  );
})();
