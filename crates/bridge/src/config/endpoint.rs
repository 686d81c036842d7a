//! The routes Bridge forwards: for each, where a client sends it, where it lands on an engine,
//! which API it speaks, and its `route` label in metrics.
//!
//! Every forwarded route answers under `/v1/direct/` and under `/v1/`. An engine gets the path
//! of the table, and nothing else: a client path that is not in the table is a 404 that never
//! reaches an engine, so an engine's admin routes on the same port (llama-server's `/slots`,
//! vLLM's `/sleep`, …) stay out of reach, and no `..` or encoded slash can lead anywhere.

/// A route Bridge forwards (and the two it uses itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST chat/completions`.
    ChatCompletions,
    /// `POST completions`.
    Completions,
    /// `POST embeddings`.
    Embeddings,
    /// `POST responses`: OpenAI's Responses API.
    Responses,
    /// `GET` or `DELETE responses/{id}`: a stored response, on the replica that made it.
    ResponseItem,
    /// `POST responses/{id}/cancel`.
    ResponseCancel,
    /// `GET responses/{id}/input_items`.
    ResponseInputItems,
    /// `POST messages`: Anthropic's Messages API.
    Messages,
    /// `POST messages/count_tokens`.
    CountTokens,
    /// `POST audio/transcriptions` (a multipart form).
    Transcriptions,
    /// `POST audio/translations` (a multipart form).
    Translations,
    /// `POST rerank`.
    Rerank,
    /// `POST score`.
    Score,
    /// `POST tokenize`, at the engine's server root.
    Tokenize,
    /// `POST detokenize`, at the engine's server root.
    Detokenize,
    /// `POST pooling`, at the engine's server root.
    Pooling,
    /// `POST classify`, at the engine's server root.
    Classify,
    /// A route a deployment allows beyond this table (`extra_routes`), at `{replica}/{route}`.
    Extra,
    /// `GET models` (asked of a replica for its model name; not forwarded).
    Models,
    /// A predict deployment's replica URL itself.
    Predict,
}

/// Which API a route speaks: its routing fields, stream grammar, errors and usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaks {
    /// OpenAI's chat completions, completions, embeddings, and the engines' JSON routes.
    OpenAi,
    /// OpenAI's Responses API: typed stream events, no `[DONE]`.
    Responses,
    /// Anthropic's Messages API.
    Anthropic,
    /// OpenAI's audio routes: multipart forms in, JSON, text or SSE out.
    Audio,
}

/// Where a route lands on a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// This path after the replica's base URL (`http://host:8000/v1` + `/chat/completions`).
    Base(&'static str),
    /// This path at the replica's server root (`http://host:8000` + `/tokenize`), where vLLM
    /// and llama-server serve it.
    Root(&'static str),
}

impl Endpoint {
    /// Every route clients can call, in the order of their metrics labels.
    pub const FORWARDED: [Endpoint; 18] = [
        Endpoint::ChatCompletions,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Responses,
        Endpoint::ResponseItem,
        Endpoint::ResponseCancel,
        Endpoint::ResponseInputItems,
        Endpoint::Messages,
        Endpoint::CountTokens,
        Endpoint::Transcriptions,
        Endpoint::Translations,
        Endpoint::Rerank,
        Endpoint::Score,
        Endpoint::Tokenize,
        Endpoint::Detokenize,
        Endpoint::Pooling,
        Endpoint::Classify,
        Endpoint::Extra,
    ];

    /// Every endpoint, in the order of their URIs in a replica (their declaration order).
    pub const ALL: [Endpoint; 20] = {
        let mut all = [Endpoint::Models; 20];
        let mut i = 0;
        while i < Self::FORWARDED.len() {
            all[i] = Self::FORWARDED[i];
            i += 1;
        }
        all[19] = Endpoint::Predict;
        all
    };

    /// The client's path after `/v1/direct` or `/v1`, which is also the `route` label.
    pub fn client_path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat/completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Responses => "responses",
            Endpoint::ResponseItem => "responses/{id}",
            Endpoint::ResponseCancel => "responses/{id}/cancel",
            Endpoint::ResponseInputItems => "responses/{id}/input_items",
            Endpoint::Messages => "messages",
            Endpoint::CountTokens => "messages/count_tokens",
            Endpoint::Transcriptions => "audio/transcriptions",
            Endpoint::Translations => "audio/translations",
            Endpoint::Rerank => "rerank",
            Endpoint::Score => "score",
            Endpoint::Tokenize => "tokenize",
            Endpoint::Detokenize => "detokenize",
            Endpoint::Pooling => "pooling",
            Endpoint::Classify => "classify",
            Endpoint::Extra => "extra",
            Endpoint::Models => "models",
            Endpoint::Predict => "",
        }
    }

    /// The forwarded route for a client path (after `/v1/direct/` or `/v1/`), if it is one;
    /// for a stored response's routes, with the response id the path names.
    pub fn from_client_path(path: &str) -> Option<(Endpoint, Option<&str>)> {
        if let Some(rest) = path.strip_prefix("responses/") {
            let (id, endpoint) = match rest.split_once('/') {
                None => (rest, Endpoint::ResponseItem),
                Some((id, "cancel")) => (id, Endpoint::ResponseCancel),
                Some((id, "input_items")) => (id, Endpoint::ResponseInputItems),
                Some(_) => return None,
            };
            return super::response_ids::valid_id(id).then_some((endpoint, Some(id)));
        }
        Self::FORWARDED
            .into_iter()
            .find(|e| e.id_suffix().is_none() && *e != Endpoint::Extra && e.client_path() == path)
            .map(|e| (e, None))
    }

    /// For a stored response's routes, what follows `responses/{id}` on the engine.
    pub fn id_suffix(self) -> Option<&'static str> {
        match self {
            Endpoint::ResponseItem => Some(""),
            Endpoint::ResponseCancel => Some("/cancel"),
            Endpoint::ResponseInputItems => Some("/input_items"),
            _ => None,
        }
    }

    /// The methods a client may use on it.
    pub fn methods(self) -> &'static str {
        match self {
            Endpoint::ResponseItem => "GET, DELETE",
            Endpoint::ResponseInputItems => "GET",
            _ => "POST",
        }
    }

    /// Where it lands on a replica.
    pub fn target(self) -> Target {
        match self {
            Endpoint::Tokenize => Target::Root("/tokenize"),
            Endpoint::Detokenize => Target::Root("/detokenize"),
            Endpoint::Pooling => Target::Root("/pooling"),
            Endpoint::Classify => Target::Root("/classify"),
            Endpoint::Predict | Endpoint::Extra => Target::Base(""),
            Endpoint::ChatCompletions => Target::Base("/chat/completions"),
            Endpoint::Completions => Target::Base("/completions"),
            Endpoint::Embeddings => Target::Base("/embeddings"),
            Endpoint::Responses
            | Endpoint::ResponseItem
            | Endpoint::ResponseCancel
            | Endpoint::ResponseInputItems => Target::Base("/responses"),
            Endpoint::Messages => Target::Base("/messages"),
            Endpoint::CountTokens => Target::Base("/messages/count_tokens"),
            Endpoint::Transcriptions => Target::Base("/audio/transcriptions"),
            Endpoint::Translations => Target::Base("/audio/translations"),
            Endpoint::Rerank => Target::Base("/rerank"),
            Endpoint::Score => Target::Base("/score"),
            Endpoint::Models => Target::Base("/models"),
        }
    }

    /// The API it speaks.
    pub fn speaks(self) -> Speaks {
        match self {
            Endpoint::Responses
            | Endpoint::ResponseItem
            | Endpoint::ResponseCancel
            | Endpoint::ResponseInputItems => Speaks::Responses,
            Endpoint::Messages | Endpoint::CountTokens => Speaks::Anthropic,
            Endpoint::Transcriptions | Endpoint::Translations => Speaks::Audio,
            _ => Speaks::OpenAi,
        }
    }

    /// Index of its `route` label in metrics ([`ROUTES`]); 0 for the two Bridge uses itself.
    pub fn metrics_index(self) -> usize {
        Self::FORWARDED
            .iter()
            .position(|e| *e == self)
            .unwrap_or_default()
    }
}

/// `route` label values, in the order of [`Endpoint::FORWARDED`].
pub const ROUTES: [&str; 18] = [
    "chat/completions",
    "completions",
    "embeddings",
    "responses",
    "responses/{id}",
    "responses/{id}/cancel",
    "responses/{id}/input_items",
    "messages",
    "messages/count_tokens",
    "audio/transcriptions",
    "audio/translations",
    "rerank",
    "score",
    "tokenize",
    "detokenize",
    "pooling",
    "classify",
    "extra",
];

/// Checks a deployment's `extra_routes`: paths of `A-Z a-z 0-9 - _` segments (no `.`, no `%`,
/// so none can climb to another path), none of Bridge's own.
pub fn check_extra_routes(routes: &[String]) -> Result<Vec<String>, String> {
    for route in routes {
        let segment_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if route.len() > 128 || route.split('/').count() > 8 || !route.split('/').all(segment_ok) {
            return Err(format!(
                "extra_routes: '{route}' must be up to 8 segments of A-Z, a-z, 0-9, '-', '_' joined by '/' (no leading '/', no '.')"
            ));
        }
        let own = Endpoint::from_client_path(route).is_some()
            || route == "models"
            || route.starts_with("models/")
            || route.starts_with("responses/");
        if own {
            return Err(format!(
                "extra_routes: '{route}' is one of Bridge's own routes"
            ));
        }
    }
    Ok(routes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_paths_agree() {
        for (i, endpoint) in Endpoint::FORWARDED.into_iter().enumerate() {
            assert_eq!(ROUTES[i], endpoint.client_path());
            assert_eq!(endpoint.metrics_index(), i);
            if endpoint.id_suffix().is_none() && endpoint != Endpoint::Extra {
                assert_eq!(
                    Endpoint::from_client_path(ROUTES[i]),
                    Some((endpoint, None))
                );
            }
        }
        for (i, endpoint) in Endpoint::ALL.into_iter().enumerate() {
            assert_eq!(
                endpoint as usize, i,
                "{endpoint:?}: replicas index URIs by it"
            );
        }
        let stored = Endpoint::from_client_path("responses/resp_1/cancel");
        assert_eq!(stored, Some((Endpoint::ResponseCancel, Some("resp_1"))));
        for path in [
            "models",
            "",
            "../slots",
            "slots",
            "chat/completions/",
            "sleep",
            "responses/{id}",
            "responses/..",
            "responses/a%2Fb",
            "responses/r/cancel/x",
            "responses/r/other",
            "responses/",
        ] {
            assert_eq!(Endpoint::from_client_path(path), None, "{path}");
        }
    }
}
