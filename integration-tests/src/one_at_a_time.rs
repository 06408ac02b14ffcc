//! DynamoDB clients for moto that send one request at a time per test
//! process.
//!
//! DynamoDB applies each request atomically: a conditional write's condition
//! and update happen as one step per item. moto's threaded server does not
//! (with 8 threads racing `attribute_not_exists` updates of one item, about
//! one trial in 20 lets two of them succeed), so concurrent conditional
//! writes could both pass against moto where DynamoDB lets only one through.
//! Serializing the requests restores DynamoDB's per-request atomicity without
//! hiding anything the store does: the read-then-conditional-write rounds of
//! concurrent writers and workers still interleave request by request.

use std::sync::OnceLock;

use aws_sdk_dynamodb::config::http::HttpRequest;
use aws_sdk_dynamodb::config::{HttpClient, RuntimeComponents, SharedHttpClient};
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};

fn gate() -> &'static tokio::sync::Mutex<()> {
    static GATE: OnceLock<tokio::sync::Mutex<()>> = OnceLock::new();
    GATE.get_or_init(tokio::sync::Mutex::default)
}

#[derive(Debug)]
struct Client {
    inner: SharedHttpClient,
}

#[derive(Debug)]
struct Connector {
    inner: SharedHttpConnector,
}

impl HttpClient for Client {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(Connector {
            inner: self.inner.http_connector(settings, components),
        })
    }
}

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let inner = self.inner.clone();
        HttpConnectorFuture::new(async move {
            let _one = gate().lock().await;
            inner.call(request).await
        })
    }
}

/// A DynamoDB client of its own for the stack, sharing the gate.
pub async fn dynamodb_client() -> aws_sdk_dynamodb::Client {
    let base = crate::dynamodb_client().await;
    // The stack's endpoints are plain HTTP.
    let inner = aws_smithy_http_client::Builder::new().build_http();
    let config = base
        .config()
        .to_builder()
        .http_client(Client { inner })
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}
