//! The status page (`GET /` on the admin port) in a real headless Chromium, driven
//! over WebDriver: it renders every listener and backend, follows the API within
//! seconds, its buttons act, its ring picture moves only the dead backend's degrees,
//! and with a token it asks for one and shows the API's refusal of a wrong one.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::util::webdriver::Browser;
use crate::util::*;

const TOKEN: &str = "page-token";

/// A TCP listener `t` (a, b, c, checked fast), a UDP listener `u` (d), and a TCP
/// listener `s` routing by server name to `[[pool]]` `p` (e, at d's address: never
/// connected to), with the admin API on `admin` (and `token` when given).
fn two_listeners(
    tcp: &[(SocketAddr, &str)],
    udp: SocketAddr,
    d: SocketAddr,
    admin: SocketAddr,
    token: Option<&str>,
) -> (String, SocketAddr) {
    let listen = free_addr();
    let mut toml = with_tables(
        &config(listen, tcp, ""),
        &ops_tables(free_addr(), admin, token),
    );
    toml.push_str(&format!(
        "\n[listener.health]\n{FAST_HEALTH}\n\n[[listener]]\nname = \"u\"\nprotocol = \"udp\"\nlisten = \"{udp}\"\n\n[[listener.backend]]\naddress = \"{d}\"\nid = \"d\"\n\n[[pool]]\nname = \"p\"\n[[pool.backend]]\naddress = \"{d}\"\nid = \"e\"\nmax_connections = 7\n[pool.health]\ncheck = \"none\"\n\n[[listener]]\nname = \"s\"\nlisten = \"{}\"\nroute_by = \"sni\"\n[[listener.route]]\nsni = [\"x.example\", \"*.y.example\"]\npool = \"p\"\n",
        free_addr()
    ));
    (toml, listen)
}

/// The page's ring picture for listener `l`, read back from the DOM: who owns each
/// of the 360 degrees ("" for nobody).
fn drawn_ring(page: &Browser, l: &str) -> Vec<String> {
    let v = page.eval(&format!(
        r#"const out = new Array(360).fill(null);
           for (const p of document.querySelectorAll('svg.ring-svg[data-listener="{l}"] path')) {{
             for (let i = +p.dataset.from; i < +p.dataset.to; i++) out[i] = p.dataset.owner;
           }}
           return out;"#
    ));
    let ring: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("no ring drawn: {v}"))
        .iter()
        .map(|o| o.as_str().expect("a degree nobody drew").to_string())
        .collect();
    assert_eq!(ring.len(), 360);
    ring
}

fn state_of(page: &Browser, l: &str, b: &str) -> String {
    page.text(&format!(
        r#"tr[data-listener="{l}"][data-backend="{b}"] .state"#
    ))
}

fn wait_state(page: &Browser, l: &str, b: &str, want: &str, within: Duration) {
    let css = format!(r#"tr[data-listener="{l}"][data-backend="{b}"] .state"#);
    page.wait_text(&css, within, |t| t == want);
}

fn api_backend(admin: SocketAddr, token: Option<&str>, b: &str) -> Value {
    let s: Value = serde_json::from_str(&http("GET", admin, "/status", token).body).unwrap();
    s["listeners"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == b)
        .unwrap()
        .clone()
}

#[test]
#[ignore = "needs chromium and chromium-driver"]
fn the_page_shows_everything_follows_the_api_and_its_buttons_act() {
    let (backends, list) = named_backends(&["a", "b", "c"]);
    let d = UdpBackend::spawn("127.0.0.1:0", "d");
    let (udp, admin) = (free_udp_addr(), free_addr());
    let (toml, listen) = two_listeners(&list, udp, d.addr, admin, None);
    let _rw = Ringway::start(&toml, &[listen, admin]);

    // Served from the binary, with nothing to fetch from elsewhere.
    let r = http("GET", admin, "/", None);
    assert_eq!(r.status, 200);
    assert!(
        r.content_type.starts_with("text/html"),
        "{}",
        r.content_type
    );
    // Its script and style sheet are its own files (the content security policy
    // allows nothing inline and nothing from elsewhere).
    for asset in ["/status.js", "/status.css"] {
        assert!(
            r.body.contains(&format!("\"{asset}\"")),
            "the page loads {asset}"
        );
        let a = http("GET", admin, asset, None);
        assert_eq!(a.status, 200, "{asset}");
        // (The SVG namespace URI is a name, not a load.)
        for outside in ["@import", "url(", "https://", "fetch(\"http"] {
            assert!(!a.body.contains(outside), "{asset} loads {outside}…");
        }
    }
    for outside in [
        "@import", "url(", "https://", "<script>", "<style>", " style=",
    ] {
        assert!(!r.body.contains(outside), "the page has {outside}…");
    }
    assert_eq!(http("POST", admin, "/", None).status, 405);

    let page = Browser::start();
    page.goto(&format!("http://{admin}/"));
    // Every listener and every backend, with protocol and address.
    page.wait_text(
        r#"section[data-listener="u"] .facts"#,
        Duration::from_secs(10),
        |t| t.contains("UDP") && t.contains(&udp.to_string()),
    );
    let facts = page.text(r#"section[data-listener="t"] .facts"#);
    assert!(
        facts.contains("TCP") && facts.contains(&listen.to_string()),
        "{facts}"
    );
    assert_eq!(page.count(r#"tr[data-listener="t"]"#), 3);
    assert_eq!(page.count(r#"tr[data-listener="u"]"#), 1);
    for (addr, id) in &list {
        let row = page.text(&format!(r#"tr[data-listener="t"][data-backend="{id}"]"#));
        assert!(row.contains(&addr.to_string()), "{row}");
    }
    for id in ["a", "b", "c"] {
        wait_state(&page, "t", id, "up", Duration::from_secs(5));
    }
    wait_state(&page, "u", "d", "up", Duration::from_secs(5));
    let whole = drawn_ring(&page, "t");
    for id in ["a", "b", "c"] {
        assert!(
            whole.iter().any(|o| o == id),
            "{id} owns no degree: {whole:?}"
        );
    }
    assert_eq!(
        whole,
        status(admin)["listeners"][0]["ring"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| ["a", "b", "c"][i.as_u64().unwrap() as usize].to_string())
            .collect::<Vec<_>>(),
        "the picture is the ring /status reports"
    );

    // Drained through the API: the page says so within 3 s.
    assert_eq!(
        http("POST", admin, "/listeners/t/backends/a/drain", None).status,
        200
    );
    wait_state(&page, "t", "a", "draining", Duration::from_secs(3));
    // A click drains through the page, and another enables again.
    page.click(r#"tr[data-listener="t"][data-backend="b"] button[data-action="drain"]"#);
    assert!(
        eventually(Duration::from_secs(3), || api_backend(admin, None, "b")
            ["admin"]
            == "draining"),
        "the drain button did not drain b"
    );
    wait_state(&page, "t", "b", "draining", Duration::from_secs(3));
    for id in ["a", "b"] {
        page.click(&format!(
            r#"tr[data-listener="t"][data-backend="{id}"] button[data-action="enable"]"#
        ));
        wait_state(&page, "t", id, "up", Duration::from_secs(3));
    }
    assert_eq!(api_backend(admin, None, "a")["admin"], "enabled");
    page.click(r#"tr[data-listener="t"][data-backend="c"] button[data-action="disable"]"#);
    wait_state(&page, "t", "c", "disabled", Duration::from_secs(3));
    page.click(r#"tr[data-listener="t"][data-backend="c"] button[data-action="enable"]"#);
    wait_state(&page, "t", "c", "up", Duration::from_secs(3));
    assert!(
        eventually(Duration::from_secs(3), || drawn_ring(&page, "t") == whole),
        "the ring did not come back whole"
    );

    // c dies: the page shows it down, with why, and its degrees, and only its, go to
    // the others.
    backends[2].stop();
    wait_state(&page, "t", "c", "down", Duration::from_secs(5));
    // A banner says who serves with fewer than all its backends.
    page.wait_text("#degraded", Duration::from_secs(3), |t| {
        t.contains("listener t: 2 of 3 backends up")
    });
    let why = page.text(r#"tr[data-listener="t"][data-backend="c"] .why"#);
    assert!(why.contains("connect"), "no reason shown: {why}");
    let mut without_c = Vec::new();
    assert!(
        eventually(Duration::from_secs(3), || {
            without_c = drawn_ring(&page, "t");
            !without_c.iter().any(|o| o == "c")
        }),
        "c still drawn: {without_c:?}"
    );
    for (deg, (before, after)) in whole.iter().zip(&without_c).enumerate() {
        if before != "c" {
            assert_eq!(before, after, "degree {deg} moved from {before} to {after}");
        } else {
            assert!(
                after == "a" || after == "b",
                "degree {deg} went to {after:?}"
            );
        }
    }
    assert_eq!(
        page.count(r#"svg.ring-svg[data-listener="t"] path[data-owner="c"]"#),
        0
    );

    // Back on the same port: up again, and the ring exactly as it was.
    let c = Backend::named_echo(&list[2].0.to_string(), "c");
    wait_state(&page, "t", "c", "up", Duration::from_secs(5));
    assert!(
        eventually(Duration::from_secs(3), || drawn_ring(&page, "t") == whole),
        "c's degrees did not all come back to it"
    );
    // Traffic shows in the counters.
    let (_s, who) = connect_named(listen);
    page.wait_text(
        &format!(r#"tr[data-listener="t"][data-backend="{who}"] td:nth-child(5)"#),
        Duration::from_secs(5),
        |t| t == "1",
    );
    assert_eq!(state_of(&page, "t", "a"), "up");
    // Totals since start (as the API counts them), and the JSON the page reads, one
    // click away.
    let total = api_backend(admin, None, &who)["connections_total"]
        .as_u64()
        .unwrap();
    assert!(total >= 1);
    page.wait_text(
        &format!(r#"tr[data-listener="t"][data-backend="{who}"] [data-totals]"#),
        Duration::from_secs(5),
        // (then " · down N s in all" when it was down for a second or more)
        |t| t.starts_with(&format!("{total} · ")) && t.contains(" · 0 errors"),
    );
    assert_eq!(page.count(r#"a#json[href="/status"]"#), 1);
    // Time down, summed over its down periods: c's, and none for b (only drained).
    let down = |id: &str| api_backend(admin, None, id)["down_seconds_total"].as_f64();
    assert!(down("c").is_some_and(|d| d > 0.0), "{:?}", down("c"));
    assert_eq!(down("b"), Some(0.0));

    // Routes and [[pool]]s: where `s` sends what, and `p` with its backend, whose
    // drain button drains it through /pools/p/...
    let routes = page.text(r#"section[data-listener="s"] [data-routes]"#);
    assert_eq!(
        routes,
        "by server name: x.example, *.y.example → p; else closed"
    );
    assert_eq!(
        page.text(r#"section[data-listener="t"] [data-routes]"#),
        "→ its own backends"
    );
    let pool = page.text(r#"section[data-pool="p"] .facts"#);
    assert!(pool.contains("used by s"), "{pool}");
    assert_eq!(
        page.text(r#"section[data-listener="t"] [data-balance]"#),
        "balance: ring"
    );
    assert_eq!(page.count(r#"tr[data-pool="p"]"#), 1);
    // A backend with max_connections shows it, and its queue.
    assert_eq!(
        page.text(r#"tr[data-pool="p"][data-backend="e"] [data-queue]"#),
        "0 waiting · 0 timed out"
    );
    page.click(r#"tr[data-pool="p"][data-backend="e"] button[data-action="drain"]"#);
    assert!(
        eventually(Duration::from_secs(3), || status(admin)["pools"][0]
            ["backends"][0]["admin"]
            == "draining"),
        "the pool's drain button did not drain e"
    );
    page.wait_text(
        r#"tr[data-pool="p"][data-backend="e"] .state"#,
        Duration::from_secs(3),
        |t| t == "draining",
    );
    drop((c, backends, d));
}

#[test]
#[ignore = "needs chromium and chromium-driver"]
fn with_a_token_the_page_asks_for_it_and_shows_the_apis_refusal() {
    let (_backends, list) = named_backends(&["a", "b"]);
    let d = UdpBackend::spawn("127.0.0.1:0", "d");
    let (udp, admin) = (free_udp_addr(), free_addr());
    let (toml, listen) = two_listeners(&list, udp, d.addr, admin, Some(TOKEN));
    let _rw = Ringway::start(&toml, &[listen, admin]);

    // The page itself needs no token (it holds no data); the API behind it does.
    assert_eq!(http("GET", admin, "/", None).status, 200);
    let page = Browser::start();
    page.goto(&format!("http://{admin}/"));
    page.wait_text("#banner", Duration::from_secs(10), |t| {
        t.contains("401") && t.contains("missing or wrong bearer token")
    });
    assert!(page.find("#login.show").is_some(), "no token form shown");
    assert_eq!(
        page.count("tr[data-backend]"),
        0,
        "data shown without a token"
    );

    // A wrong token: the API's refusal, still nothing shown.
    page.type_into("#token", "not-the-token");
    page.click("#login button[type=submit]");
    page.wait_text("#banner", Duration::from_secs(5), |t| t.contains("401"));
    std::thread::sleep(Duration::from_millis(1600)); // one more refresh: still refused
    assert!(page.text("#banner").contains("401"));
    assert_eq!(page.count("tr[data-backend]"), 0);

    // The right one: everything shows, the form goes, and the buttons carry the token.
    page.type_into("#token", TOKEN);
    page.click("#login button[type=submit]");
    wait_state(&page, "t", "a", "up", Duration::from_secs(5));
    assert_eq!(page.count(r#"tr[data-listener="t"]"#), 2);
    assert_eq!(page.count(r#"tr[data-listener="u"]"#), 1);
    assert!(page.find("#login.show").is_none(), "token form still shown");
    assert_eq!(page.text("#banner"), "");
    page.click(r#"tr[data-listener="t"][data-backend="a"] button[data-action="drain"]"#);
    assert!(
        eventually(Duration::from_secs(3), || api_backend(
            admin,
            Some(TOKEN),
            "a"
        )["admin"]
            == "draining"),
        "the drain button did not drain a with the token"
    );
    wait_state(&page, "t", "a", "draining", Duration::from_secs(3));
    // Kept for the tab: a reload of the page needs no new token.
    page.goto(&format!("http://{admin}/"));
    wait_state(&page, "t", "a", "draining", Duration::from_secs(5));
    assert!(page.find("#login.show").is_none());
    drop(d);
}
