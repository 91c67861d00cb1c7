//! The `[metrics]` HTTP endpoint, on shard 0: `GET /metrics` gathers every shard's report
//! over the mesh and answers with [`crate::observe::prometheus::render`]; `GET /health`
//! answers 200 when every shard reported within a second, 503 otherwise. One request per
//! connection (`Connection: close`): a scraper opens one every interval, so keep-alive
//! would save nothing worth its state.
//!
//! **Owns:** the endpoint's sockets and its limits: requests of at most
//! [`MAX_REQUEST`] bytes, read within [`REQUEST_TIMEOUT`], at most [`MAX_OPEN`] at once
//! (beyond: closed at once). **Must not touch:** MQTT connections; a shard's state is
//! read through its report only.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use futures::{AsyncReadExt, FutureExt};
use glommio::net::{TcpListener, TcpStream};

use super::shard::Shard;

/// The longest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a client has to send its request (and to read the answer).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Requests served at once; more are closed at once (a scraper needs one).
const MAX_OPEN: usize = 16;
/// How long a scrape waits for every shard's report.
const GATHER_TIMEOUT: Duration = Duration::from_secs(2);
/// Reports younger than this answer a request without asking the shards again.
const FRESH: Duration = Duration::from_secs(1);

/// Accepts and answers until the shard stops.
pub(crate) async fn serve_metrics(shard: Rc<Shard>, listener: TcpListener) {
    let open = Rc::new(Cell::new(0usize));
    while !shard.stopping.get() {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if open.get() >= MAX_OPEN {
            continue;
        }
        open.set(open.get() + 1);
        let (shard, open) = (shard.clone(), open.clone());
        glommio::spawn_local(async move {
            // A panic (a bug) ends this request only, never shard 0.
            let r = std::panic::AssertUnwindSafe(answer(&shard, stream))
                .catch_unwind()
                .await;
            if let Err(panic) = r {
                let why = super::panic_message(&*panic);
                tracing::error!(panic = %why, "metrics endpoint: request panicked");
            }
            open.set(open.get() - 1);
        })
        .detach();
    }
}

/// Reads one request and answers it.
async fn answer(shard: &Shard, mut stream: TcpStream) {
    let head = {
        let read = Box::pin(read_head(&mut stream));
        let timer = Box::pin(glommio::timer::sleep(REQUEST_TIMEOUT));
        match futures::future::select(read, timer).await {
            futures::future::Either::Left((Some(head), _)) => head,
            _ => return,
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let (status, content_type, body) = match req.parse(&head) {
        Ok(httparse::Status::Complete(_)) if req.method == Some("GET") => {
            let path = req.path.unwrap_or("/");
            let path = path.split('?').next().unwrap_or(path);
            route(shard, path).await
        }
        Ok(httparse::Status::Complete(_)) => (
            "405 Method Not Allowed\r\nAllow: GET",
            "text/plain",
            "GET only\n".to_owned(),
        ),
        _ => ("400 Bad Request", "text/plain", "bad request\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    super::serve::write_within(&mut stream, response.as_bytes(), REQUEST_TIMEOUT).await;
}

/// The answer to `GET path`: status, content type, body.
async fn route(shard: &Shard, path: &str) -> (&'static str, &'static str, String) {
    match path {
        "/metrics" => match shard.gathered(FRESH, GATHER_TIMEOUT).await {
            Some(reports) => (
                "200 OK",
                crate::observe::prometheus::CONTENT_TYPE,
                crate::observe::prometheus::render(&reports),
            ),
            None => (
                "503 Service Unavailable",
                "text/plain",
                "a shard did not report\n".to_owned(),
            ),
        },
        "/health" => match shard.gathered(FRESH, Duration::from_secs(1)).await {
            Some(_) => ("200 OK", "text/plain", "ok\n".to_owned()),
            None => (
                "503 Service Unavailable",
                "text/plain",
                "a shard did not report\n".to_owned(),
            ),
        },
        _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
    }
}

/// The request head (up to the blank line), or None if the client closed, sent too much
/// or something that is not a request.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(chunk.get(..n)?);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Some(head);
        }
        if head.len() > MAX_REQUEST {
            return None;
        }
    }
}
