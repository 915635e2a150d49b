//! A waSCC actor that classifies images: `PUT` or `POST` a PNG or JPEG to
//! the HTTP server capability and it answers the class as a JSON string
//! (`"tiger cat"`), or with `?top=N` a JSON list of the N most probable
//! classes with their probabilities.
//!
//! Bad requests get answers, never traps: 400 for an empty or undecodable
//! body or a bad query (its keys and values are percent-decoded; a
//! malformed escape is named), 405 for another method, 413 for an image
//! whose decoding would need more memory than the limit (416 MiB, the file
//! included, estimated from its header before anything is decoded:
//! `model_vision::footprint`), 500 if the model fails. The limit keeps a
//! valid image's decoding within the host's default 512 MiB an instance;
//! should an allocation still fail (a smaller host limit), the actor tells
//! the host "out of memory: ..." before it traps. The model (the same
//! artifacts as the WASI command's) is embedded at build time.

mod http;
#[cfg(target_arch = "wasm32")]
mod oom;
mod query;
mod wapc;

mod model {
    include!(concat!(env!("OUT_DIR"), "/model.rs"));
}

use http::{HealthRequest, HealthResponse, Request, Response};
use model_runtime::Session;
use model_vision::{Classifier, Error as VisionError, Prediction};
use serde::Serialize;
use std::cell::RefCell;

#[no_mangle]
pub extern "C" fn __guest_call(op_len: i32, msg_len: i32) -> i32 {
    wapc::guest_call(op_len, msg_len, dispatch)
}

fn dispatch(operation: &str, payload: &[u8]) -> wapc::Outcome {
    match operation {
        http::OP_HANDLE_REQUEST => {
            let request: Request = rmp_serde::from_slice(payload)
                .map_err(|e| format!("{}: malformed request: {}", operation, e))?;
            encode(&handle_request(&request))
        }
        http::OP_HEALTH_REQUEST => {
            let _: HealthRequest = rmp_serde::from_slice(payload)
                .map_err(|e| format!("{}: malformed request: {}", operation, e))?;
            encode(&health())
        }
        _ => Err(format!("unknown operation '{}' (this actor handles {} for {})",
                         operation, http::OP_HANDLE_REQUEST, http::CAPABILITY)),
    }
}

fn encode<T: Serialize>(value: &T) -> wapc::Outcome {
    rmp_serde::to_vec_named(value).map_err(|e| format!("cannot encode the response: {}", e))
}

/// The classifier and its session (buffers reused by every request), made
/// on first use and kept as long as the instance.
struct Actor {
    classifier: &'static Classifier,
    session: Session<'static>,
}

thread_local! {
    static ACTOR: RefCell<Option<Actor>> = RefCell::new(None);
}

fn with_actor<T>(f: impl FnOnce(&mut Actor) -> T) -> Result<T, String> {
    ACTOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let classifier: &'static Classifier = Box::leak(Box::new(load_classifier()?));
            *slot = Some(Actor { classifier, session: classifier.session() });
        }
        // Just filled if it was empty.
        Ok(f(slot.as_mut().expect("actor initialised")))
    })
}

fn load_classifier() -> Result<Classifier, String> {
    let failed = |e: &dyn std::fmt::Display| format!("model '{}': {}", model::NAME, e);
    let model = model::load().map_err(|e| failed(&e))?;
    let meta = model::META.ok_or_else(|| failed(&"no embedded metadata"))?;
    let labels = model::LABELS.ok_or_else(|| failed(&"no embedded labels"))?;
    Classifier::new(model, meta, labels).map_err(|e| failed(&e))
}

fn health() -> HealthResponse {
    match with_actor(|_| ()) {
        Ok(()) => HealthResponse { healthy: true, message: format!("model '{}' loaded", model::NAME) },
        Err(message) => HealthResponse { healthy: false, message },
    }
}

#[derive(Serialize)]
struct Ranked<'a> {
    label: &'a str,
    probability: f32,
}

fn handle_request(request: &Request) -> Response {
    if request.method != "PUT" && request.method != "POST" {
        let mut response = Response::error(405, &format!("method {} not allowed: PUT or POST an image", request.method));
        response.header.insert("Allow".to_string(), "PUT, POST".to_string());
        return response;
    }
    let top = match query::parse_top(&request.query_string) {
        Ok(top) => top,
        Err(message) => return Response::error(400, &message),
    };
    if request.body.is_empty() {
        return Response::error(400, "empty body: send a PNG or JPEG image");
    }
    let outcome = with_actor(|actor| match actor.classifier.classify(&mut actor.session, &request.body, top.unwrap_or(1)) {
        Ok(predictions) => answer(&predictions, top),
        Err(e @ VisionError::Decode(_)) => Response::error(400, &e.to_string()),
        Err(e @ VisionError::TooLarge { .. }) => Response::error(413, &e.to_string()),
        Err(e) => Response::error(500, &e.to_string()),
    });
    outcome.unwrap_or_else(|message| Response::error(500, &message))
}

fn answer(predictions: &[Prediction<'_>], top: Option<usize>) -> Response {
    match top {
        None => match predictions.first() {
            Some(best) => Response::json(200, &best.label),
            None => Response::error(500, "the model has no classes"),
        },
        Some(_) => {
            let ranked: Vec<Ranked> =
                predictions.iter().map(|p| Ranked { label: p.label, probability: p.probability }).collect();
            Response::json(200, &ranked)
        }
    }
}
