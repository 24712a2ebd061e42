//! A small HTTP client for the CLI's remote commands and the benchmarks.

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A keep-alive HTTP/1.1 client.
#[derive(Clone)]
pub struct Client {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
}

/// A response: status, headers and body.
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: hyper::HeaderMap,
    /// Body bytes.
    pub body: Bytes,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Client {
    /// A client with a connection pool.
    pub fn new() -> Client {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Client {
            inner: HyperClient::builder(TokioExecutor::new())
                .pool_max_idle_per_host(64)
                .build(connector),
        }
    }

    /// Send a request with an optional bearer key and body.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        key: Option<&str>,
        content_type: Option<&str>,
        body: Bytes,
    ) -> anyhow::Result<Reply> {
        let auth = key.map(|k| format!("Bearer {k}"));
        let mut headers = Vec::new();
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        if let Some(ct) = content_type {
            headers.push(("content-type", ct));
        }
        self.send_with(method, url, &headers, body).await
    }

    /// Send a request with the given headers and body.
    pub async fn send_with(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> anyhow::Result<Reply> {
        let mut req = Request::builder().method(method).uri(url);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Full::new(body)).context("building request")?;
        let resp = self
            .inner
            .request(req)
            .await
            .with_context(|| format!("request to {url}"))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .context("reading response")?
            .to_bytes();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// POST JSON.
    pub async fn post_json(
        &self,
        url: &str,
        key: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<Reply> {
        let bytes = Bytes::from(serde_json::to_vec(body)?);
        self.send(
            Method::POST,
            url,
            Some(key),
            Some("application/json"),
            bytes,
        )
        .await
    }

    /// GET.
    pub async fn get(&self, url: &str, key: Option<&str>) -> anyhow::Result<Reply> {
        self.send(Method::GET, url, key, None, Bytes::new()).await
    }
}

/// Fail with the server's message unless the status is 2xx.
pub fn ok_json(reply: Reply) -> anyhow::Result<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_slice(&reply.body).unwrap_or(serde_json::Value::Null);
    if !reply.status.is_success() {
        let msg = v["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| reply.text());
        anyhow::bail!("server answered {}: {msg}", reply.status);
    }
    Ok(v)
}
