//! A small W3C WebDriver client for the status-page tests: Debian's chromedriver
//! driving Debian's headless Chromium, spoken to over HTTP with ureq. Only what the
//! tests need: open a page, find elements by CSS, read text, click, type.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::{eventually, free_port};

/// The key W3C WebDriver puts an element id under.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session, closed on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium (no sandbox: tests run as root; no
    /// background networking: this machine reaches nothing outside).
    pub fn start() -> Browser {
        let installed = |bin: &str| {
            Command::new(bin)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        assert!(
            installed("chromedriver") && installed("chromium"),
            "needs chromium and chromium-driver (apt-get install chromium chromium-driver)"
        );
        let port = free_port("127.0.0.1");
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let ready = eventually(Duration::from_secs(20), || {
            agent.get(&format!("{base}/status")).call().is_ok()
        });
        assert!(ready, "chromedriver did not start");
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", "--window-size=1400,900",
                     format!("--user-data-dir={}", profile.path().display())]
        }}}});
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            agent,
            _profile: profile,
        };
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        b
    }

    /// One WebDriver call; returns its `value`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let result = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self
                .agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body.unwrap_or(json!({})).to_string()),
        };
        let mut res = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let text = res.body_mut().read_to_string().unwrap();
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        v["value"].clone()
    }

    fn at(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.call("POST", &self.at("/url"), Some(json!({ "url": url })));
    }

    /// The first element matching `css`, if any.
    pub fn find(&self, css: &str) -> Option<String> {
        let v = self.call(
            "POST",
            &self.at("/element"),
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT].as_str().map(str::to_string)
    }

    /// How many elements match `css`.
    pub fn count(&self, css: &str) -> usize {
        let v = self.call(
            "POST",
            &self.at("/elements"),
            Some(json!({"using": "css selector", "value": css})),
        );
        v.as_array().map_or(0, Vec::len)
    }

    /// The visible text of the first element matching `css` ("" when there is none).
    pub fn text(&self, css: &str) -> String {
        match self.find(css) {
            Some(id) => self
                .call("GET", &self.at(&format!("/element/{id}/text")), None)
                .as_str()
                .unwrap_or("")
                .to_string(),
            None => String::new(),
        }
    }

    /// Waits (bounded) until the text of `css` satisfies `pred`; returns it.
    pub fn wait_text(&self, css: &str, within: Duration, pred: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let ok = eventually(within, || {
            last = self.text(css);
            pred(&last)
        });
        assert!(ok, "{css}: still {last:?} after {within:?}");
        last
    }

    /// Clicks the first element matching `css`. The page redraws itself every
    /// refresh, so an element found a moment ago may be gone: find it again then.
    pub fn click(&self, css: &str) {
        for _ in 0..10 {
            let id = self
                .find(css)
                .unwrap_or_else(|| panic!("nothing matches {css}"));
            let v = self.call("POST", &self.at(&format!("/element/{id}/click")), None);
            match v["error"].as_str() {
                None => return,
                Some("stale element reference") => continue,
                Some(e) => panic!("click {css}: {e}: {v}"),
            }
        }
        panic!("click {css}: the element was replaced under every try");
    }

    /// Runs `script` in the page and returns what it returns.
    pub fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            &self.at("/execute/sync"),
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Types `text` into the first element matching `css`.
    pub fn type_into(&self, css: &str, text: &str) {
        let id = self
            .find(css)
            .unwrap_or_else(|| panic!("nothing matches {css}"));
        self.call("POST", &self.at(&format!("/element/{id}/clear")), None);
        self.call(
            "POST",
            &self.at(&format!("/element/{id}/value")),
            Some(json!({ "text": text })),
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let url = format!("{}/session/{}", self.base, self.session);
            let _ = self.agent.delete(&url).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
