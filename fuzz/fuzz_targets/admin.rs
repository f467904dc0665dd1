//! The admin API's request handling: raw bytes as a client sends them (request line,
//! headers, body, pipelined requests, garbage) through the same hyper connection
//! server and the same request decision (`ringway::control::admin_route`) a real
//! admin connection gets. Never a panic, and the decision keeps its promises: with a
//! token, nothing but the status page's files is granted without exactly that token;
//! nothing is granted to a `Host` that is not the admin API's own; state changes only
//! on POST, never with another site's `Origin` or a form body.

#![no_main]

use std::convert::Infallible;
use std::sync::OnceLock;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use ringway::control::{admin_route, serve_io, AdminCall, AdminPolicy, HttpBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "s3cret-token";

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    })
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    token: Option<&'static str>,
) -> Result<Response<HttpBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let auth = parts.headers.get(hyper::header::AUTHORIZATION);
    let policy = AdminPolicy {
        token: token.map(str::to_string),
        hosts: vec!["ringway.internal".to_string()],
        listen: Some("127.0.0.1:9101".parse().unwrap()),
    };
    let decided = admin_route(&parts, &policy);
    let header = |name| parts.headers.get(name).and_then(|v: &hyper::header::HeaderValue| v.to_str().ok());
    if decided.is_ok() {
        let host = header(hyper::header::HOST).unwrap_or("").to_ascii_lowercase();
        let host = host.trim_end_matches(':').trim_end_matches('.');
        assert!(
            host.starts_with("127.0.0.1") || host.starts_with("localhost") || host.starts_with("ringway.internal"),
            "granted to Host {host:?}"
        );
    }
    if let (Ok(call), Some(t)) = (&decided, token) {
        if !matches!(call, AdminCall::Page | AdminCall::Asset(_)) {
            let given = auth.and_then(|v| v.to_str().ok()).unwrap_or("");
            assert_eq!(
                given.trim_start_matches("Bearer ").trim(),
                t,
                "granted without the token"
            );
        }
    }
    if let Ok(AdminCall::SetAdmin { .. } | AdminCall::Reload) = &decided {
        assert_eq!(parts.method, Method::POST, "a state change without POST");
        let form = header(hyper::header::CONTENT_TYPE)
            .is_some_and(|t| !t.to_ascii_lowercase().trim_start().starts_with("application/json"));
        assert!(!form, "a state change with a non-JSON body type");
        for name in [hyper::header::ORIGIN, hyper::header::REFERER] {
            if let Some(o) = header(name.clone()) {
                assert!(o.contains("127.0.0.1") || o.contains("localhost") || o.contains("ringway.internal"), "a change from {o:?}");
            }
        }
    }
    // Bodies are read as a real server would let them arrive (and are ignored).
    let _ = body.collect().await;
    Ok(match decided {
        Ok(call) => {
            let mut r = Response::new(http_body_util::Full::new(Bytes::from(format!("{call:?}"))));
            *r.status_mut() = StatusCode::OK;
            r
        }
        Err(refusal) => refusal.response(),
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, raw)) = data.split_first() else {
        return;
    };
    let token = (flags & 1 == 1).then_some(TOKEN);
    let raw = raw.to_vec();
    runtime().block_on(async move {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let service = hyper::service::service_fn(move |req| answer(req, token));
        let served = tokio::spawn(serve_io(TokioIo::new(server), service));
        let _ = client.write_all(&raw).await;
        let _ = client.shutdown().await;
        let mut out = Vec::new();
        let _ = client.read_to_end(&mut out).await;
        let _ = served.await;
    });
});
