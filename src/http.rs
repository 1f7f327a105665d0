//! HTTP on hyper: the agent's `/metrics` and `/status` server, and the one client that reads them (`switchboard status`, the tests).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// The biggest request read; a scrape's head is a few hundred bytes (hyper's floor is 8 KiB).
const MAX_REQUEST_HEAD: usize = 16 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Renders the body of one path, or `None` for 404.
pub(crate) type Handler = Arc<dyn Fn(&str) -> Option<(&'static str, String)> + Send + Sync>;

/// Serves requests for ever; each connection on its own task, one request per connection.
pub(crate) async fn serve(listener: TcpListener, handler: Handler) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let response = respond(request.method(), request.uri().path(), &handler);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .max_buf_size(MAX_REQUEST_HEAD)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, connection).await;
        });
    }
}

/// The answer to one request; hyper leaves the body out for HEAD.
fn respond(method: &Method, path: &str, handler: &Handler) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (method, handler(path)) {
        (&Method::GET | &Method::HEAD, Some((content_type, body))) => {
            (StatusCode::OK, content_type, body)
        }
        (&Method::GET | &Method::HEAD, None) => {
            (StatusCode::NOT_FOUND, "text/plain", "not found\n".into())
        }
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

/// Why a GET failed.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("GET {path} from {addr}: {source}")]
    Http {
        addr: String,
        path: String,
        source: hyper::Error,
    },
    #[error("GET {path} from {addr}: no answer within {timeout:?}")]
    Timeout {
        addr: String,
        path: String,
        timeout: Duration,
    },
    #[error("starting an I/O runtime: {0}")]
    Runtime(std::io::Error),
}

/// `GET path` from the HTTP server at `addr` ("host:port"), blocking: the status and the body.
pub fn get(addr: &str, path: &str, timeout: Duration) -> Result<(u16, String), GetError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(GetError::Runtime)?;
    let http = |source| GetError::Http {
        addr: addr.to_string(),
        path: path.to_string(),
        source,
    };
    runtime.block_on(async {
        let exchange = async {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|source| GetError::Connect {
                    addr: addr.to_string(),
                    source,
                })?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(http)?;
            tokio::spawn(connection);
            let request = Request::get(path)
                .header(HOST, addr)
                .body(Empty::<Bytes>::new())
                .expect("a GET of a path is a valid request");
            let response = sender.send_request(request).await.map_err(http)?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.map_err(http)?;
            Ok((
                status,
                String::from_utf8_lossy(&body.to_bytes()).into_owned(),
            ))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| GetError::Timeout {
                addr: addr.to_string(),
                path: path.to_string(),
                timeout,
            })?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler() -> Handler {
        Arc::new(|path| {
            (path == "/metrics").then(|| ("text/plain; version=0.0.4", "up 1\n".into()))
        })
    }

    #[test]
    fn status_codes_follow_method_and_path() {
        let code = |method: Method, path: &str| respond(&method, path, &handler()).status();
        assert_eq!(code(Method::GET, "/metrics"), StatusCode::OK);
        assert_eq!(code(Method::HEAD, "/metrics"), StatusCode::OK);
        assert_eq!(code(Method::GET, "/nope"), StatusCode::NOT_FOUND);
        assert_eq!(
            code(Method::POST, "/metrics"),
            StatusCode::METHOD_NOT_ALLOWED
        );
        let ok = respond(&Method::GET, "/metrics", &handler());
        assert_eq!(ok.headers()[CONTENT_TYPE], "text/plain; version=0.0.4");
    }

    #[test]
    fn the_client_reads_what_the_server_serves() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            runtime.block_on(async {
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), serve(listener, handler())).await;
            })
        });
        let timeout = Duration::from_secs(5);
        assert_eq!(
            get(&addr, "/metrics", timeout).unwrap(),
            (200, "up 1\n".into())
        );
        assert_eq!(
            get(&addr, "/other", timeout).unwrap(),
            (404, "not found\n".into())
        );
        drop(server);
    }

    #[test]
    fn nothing_listening_is_a_connect_error() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let err = get(&addr, "/metrics", Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, GetError::Connect { .. }), "{err}");
    }
}
