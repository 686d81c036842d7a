//! Bridge through `async-openai`, the Rust client a user's Rust service would use: typed
//! requests routed by the `baseten/{model_id}` model form (it cannot add body fields), a stream,
//! embeddings, the model list, and errors read back with their string `code`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs,
};
use async_openai::types::embeddings::CreateEmbeddingRequestArgs;
use async_openai::Client;
use common::*;
use futures_util::StreamExt;

async fn client() -> (Running, Running, Client<OpenAIConfig>) {
    let sim = Sim::start().await;
    let mut config = "[[auth.keys]]\nname = \"rust\"\nkey = \"sk-rust\"\n".to_string();
    config.push_str(&one_model(&sim.base()));
    let bridge = Bridge::start(&config).await;
    let client = Client::with_config(
        OpenAIConfig::new()
            .with_api_base(bridge.url("/v1/direct"))
            .with_api_key("sk-rust"),
    );
    (sim, bridge, client)
}

fn ask(model: &str) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model(model)
        .max_completion_tokens(32u32)
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("Hello")
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap()
}

#[tokio::test]
async fn typed_requests_streams_embeddings_and_models() {
    let (_sim, _bridge, client) = client().await;
    let answer = client.chat().create(ask("baseten/m")).await.unwrap();
    let text = answer.choices[0].message.content.clone().unwrap();
    assert!(
        text.starts_with("Hello from Bridge's simulated engine"),
        "{text}"
    );
    assert!(answer.usage.unwrap().completion_tokens > 0);

    // The deployment named too, and a stream read to its end.
    let mut stream = client
        .chat()
        .create_stream(ask("baseten/m/d1"))
        .await
        .unwrap();
    let mut streamed = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        if let Some(choice) = chunk.choices.first() {
            streamed.push_str(choice.delta.content.as_deref().unwrap_or_default());
        }
    }
    assert_eq!(streamed, text);

    let embeddings = client
        .embeddings()
        .create(
            CreateEmbeddingRequestArgs::default()
                .model("baseten/m")
                .input("Hello")
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(!embeddings.data[0].embedding.is_empty());

    let models = client.models().list().await.unwrap();
    assert_eq!(models.data[0].id, "m");
}

#[tokio::test]
async fn errors_come_back_typed_with_their_string_code() {
    let (_sim, bridge, client) = client().await;
    let Err(OpenAIError::ApiError(e)) = client.chat().create(ask("baseten/nope")).await else {
        panic!("an unknown model must be an API error");
    };
    assert_eq!(e.status_code.as_u16(), 404);
    assert_eq!(e.api_error.code.as_deref(), Some("model_not_found"));
    assert!(e.api_error.message.contains("nope"));

    let stranger = Client::with_config(
        OpenAIConfig::new()
            .with_api_base(bridge.url("/v1/direct"))
            .with_api_key("sk-wrong"),
    );
    let Err(OpenAIError::ApiError(e)) = stranger.chat().create(ask("baseten/m")).await else {
        panic!("a wrong key must be an API error");
    };
    assert_eq!(e.status_code.as_u16(), 401);
    assert_eq!(e.api_error.code.as_deref(), Some("invalid_api_key"));
}
