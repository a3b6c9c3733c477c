//! Public requests as types: [`Request`] has one variant per request code
//! of `public_api.proto`, each carrying its payload. io builds it where it
//! decodes a request ([`Request::from_message`]); the cluster forwarding
//! turns it back ([`Request::into_message`]). The table below is the one
//! place a request's code and payload are paired; the codes only the node
//! sends are refused as requests.

use super::proto::public_api::{
    ClusterApply, ClusterService, LogsRequest, NodeInfoRequest, ServiceDefinitionRequest,
    ServiceEnable, ServiceRestart, ServiceSignal, ServiceStart, ServiceStatusRequest, ServiceStop,
    TraceRequest, message::Code,
};

/// Why a message is no request the node takes: answered with
/// `Error{BAD_REQUEST}` and this reason, the connection kept.
pub type BadRequest = super::BadMessage<Code>;

typed_messages! {
    /// A client's request: one variant per request code, named as the
    /// code, carrying the payload the code takes.
    pub enum Request of public_api {
        required {
            ServiceStart(ServiceStart: ServiceStart),
            ServiceStop(ServiceStop: ServiceStop),
            ServiceRestart(ServiceRestart: ServiceRestart),
            TraceRequest(TraceRequest: TraceRequest),
            ServiceSignal(ServiceSignal: ServiceSignal),
            ServiceEnable(ServiceEnable: ServiceEnable),
            ServiceDefinitionRequest(ServiceDefinitionRequest: ServiceDefinitionRequest),
            ClusterApply(ClusterApply: ClusterApply),
            ClusterRemove(ClusterService: ClusterService),
            ClusterStart(ClusterService: ClusterService),
            ClusterStop(ClusterService: ClusterService),
            LogsRequest(LogsRequest: LogsRequest),
        }
        optional {
            NodeInfoRequest(NodeInfoRequest: NodeInfoRequest),
            ServiceStatusRequest(ServiceStatusRequest: ServiceStatusRequest),
        }
        bare {
            Introduce,
            Shutdown,
            ConfigReload,
            Subscribe,
            ClusterStatusRequest,
            MetricsRequest,
        }
        refused("{} is a reply, not a request") {
            Ack,
            NodeInfoResponse,
            ServiceStatusResponse,
            TraceResponse,
            Error,
            Event,
            ServiceDefinitionResponse,
            ClusterStatusResponse,
            LogLines,
            MetricsResponse,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::proto::public_api::{self, Message, message::Payload};

    #[test]
    fn a_request_goes_to_its_variant_and_back_unchanged() {
        let message = Message {
            code: Code::ServiceStop as i32,
            correlation_id: Some("c:1".to_owned()),
            payload: Some(Payload::ServiceStop(ServiceStop {
                service_id: "web".to_owned(),
            })),
        };
        let request = Request::from_message(message.code, message.payload.clone()).unwrap();
        assert_eq!(
            request,
            Request::ServiceStop(ServiceStop {
                service_id: "web".to_owned()
            })
        );
        assert_eq!(request.code(), Code::ServiceStop);
        assert_eq!(request.into_message(Some("c:1".to_owned())), message);
    }

    #[test]
    fn an_optional_payload_left_out_is_its_default() {
        assert_eq!(
            Request::from_message(Code::NodeInfoRequest as i32, None),
            Ok(Request::NodeInfoRequest(NodeInfoRequest::default()))
        );
    }

    #[test]
    fn what_is_no_request_is_refused_with_a_reason() {
        let refused = |code: i32, payload: Option<Payload>| {
            Request::from_message(code, payload).unwrap_err().reason
        };
        assert_eq!(refused(999, None), "unknown code 999");
        assert_eq!(
            refused(Code::ServiceStart as i32, None),
            "ServiceStart requires its payload"
        );
        let stop = Payload::ServiceStop(ServiceStop::default());
        assert_eq!(
            refused(Code::ServiceStart as i32, Some(stop.clone())),
            "ServiceStart does not take the payload it was sent"
        );
        assert_eq!(
            refused(Code::Subscribe as i32, Some(stop)),
            "Subscribe does not take the payload it was sent"
        );
        assert_eq!(
            refused(Code::Ack as i32, None),
            "Ack is a reply, not a request"
        );
        let error = Payload::Error(public_api::Error::default());
        assert_eq!(
            refused(Code::Error as i32, Some(error)),
            "Error is a reply, not a request"
        );
    }
}
