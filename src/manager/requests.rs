//! The manager's public side: checking, dispatching and answering client
//! requests, and building node info, status and trace replies.

use super::*;

impl Manager {
    pub(super) fn on_request(&mut self, request: ClientRequest, now: Instant) {
        let ClientRequest {
            connection,
            mut message,
            request,
        } = request;
        let correlation = message.correlation_id.take().unwrap_or_default();
        let result = self.dispatch(connection, &correlation, request, now);
        self.answer(connection, correlation, result);
    }

    /// Works out a request's answer: `Ok(None)` when it comes later.
    pub(super) fn dispatch(
        &mut self,
        connection: ConnectionId,
        correlation: &str,
        request: Result<Request, BadRequest>,
        now: Instant,
    ) -> Answer {
        let request = match request {
            Ok(request) => request,
            Err(refusal) => {
                if let Some(code) = refusal.code {
                    self.counters.request(code);
                }
                return Err(RequestError::new(Kind::BadRequest, refusal.reason));
            }
        };
        self.counters.request(request.code());
        if self.shutdown.is_some() {
            return Err(RequestError::new(
                Kind::ShuttingDown,
                "the node is shutting down",
            ));
        }
        match request {
            Request::Introduce => Ok(Some((
                Code::Introduce,
                Body::Message(Some(Payload::ClientIntroduce(ClientIntroduce {
                    client_id: format!("{}-{}", self.client_prefix, connection.0),
                    node_name: self.identity.name.clone(),
                    protocol_version: Some(PROTOCOL_VERSION),
                    max_frame: Some(self.config.node.max_frame),
                }))),
            ))),
            Request::NodeInfoRequest(request) => {
                self.node_info_asked |= !request.details();
                Ok(Some((
                    Code::NodeInfoResponse,
                    self.node_info(request.details()),
                )))
            }
            Request::TraceRequest(request) => Ok(Some((
                Code::TraceResponse,
                Body::Message(Some(Payload::TraceResponse(
                    self.trace(&request.correlation_id),
                ))),
            ))),
            Request::Shutdown => {
                let order = dm::Message {
                    code: dm::message::Code::Shutdown as i32,
                    correlation_id: Some(correlation.to_owned()),
                };
                self.tracer.record(Role::Manager, Role::Daemon, &order);
                self.links
                    .to_daemon
                    .send(order)
                    .map_err(|_| RequestError::new(Kind::Internal, "the daemon is gone"))?;
                Ok(Some((Code::Ack, Body::Message(None))))
            }
            Request::ServiceStatusRequest(request) => {
                let wanted = request.service_id.filter(|id| !id.is_empty());
                let metrics = request.metrics.unwrap_or(false).then_some(now);
                let status = match wanted {
                    Some(id) => {
                        self.known(&id)?;
                        self.status_payload(self.registry.get(&id), metrics, &[])
                    }
                    None => self.status_payload(self.registry.values(), metrics, &[]),
                };
                Ok(Some((Code::ServiceStatusResponse, Body::Encoded(status))))
            }
            Request::ServiceStart(request) => {
                if !request.version.is_empty() && request.version != self.config.effective_version {
                    return Err(RequestError::new(
                        Kind::VersionMismatch,
                        format!(
                            "version {} is not the loaded configuration's {}",
                            request.version, self.config.effective_version
                        ),
                    ));
                }
                self.act(
                    connection,
                    correlation,
                    &request.service_id,
                    Event::Start,
                    now,
                )
            }
            Request::ServiceStop(request) => self.act(
                connection,
                correlation,
                &request.service_id,
                Event::Stop,
                now,
            ),
            Request::ServiceRestart(request) => self.act(
                connection,
                correlation,
                &request.service_id,
                Event::Restart,
                now,
            ),
            Request::ServiceSignal(request) => self.signal(connection, correlation, &request, now),
            Request::ServiceEnable(request) => {
                self.known(&request.service_id)?;
                if let Some(service) = self.registry.get_mut(&request.service_id) {
                    service.enabled = Some(request.enabled);
                    self.record_dirty.insert(request.service_id.clone());
                }
                log::info!(
                    "[{correlation}] {} {}",
                    request.service_id,
                    if request.enabled {
                        "enabled: it starts with the node"
                    } else {
                        "disabled: it does not start with the node"
                    }
                );
                let status = self.status_of(self.registry.get(&request.service_id));
                Ok(Some((Code::Ack, Body::Encoded(status))))
            }
            Request::ServiceDefinitionRequest(request) => {
                self.known(&request.service_id)?;
                Ok(Some((
                    Code::ServiceDefinitionResponse,
                    Body::Message(Some(Payload::ServiceDefinitionResponse(Box::new(
                        self.definition(&request.service_id),
                    )))),
                )))
            }
            Request::ConfigReload => self
                .reload(correlation, now)
                .map(|status| Some((Code::Ack, Body::Encoded(status)))),
            request @ (Request::ClusterStatusRequest
            | Request::ClusterApply(_)
            | Request::ClusterRemove(_)
            | Request::ClusterStart(_)
            | Request::ClusterStop(_)) => {
                self.forward_to_cluster(connection, correlation, request.into_message(None), now)
            }
            Request::MetricsRequest => Ok(Some((
                Code::MetricsResponse,
                Body::Message(Some(Payload::MetricsResponse(
                    public_api::MetricsResponse {
                        text: self.prometheus(now),
                    },
                ))),
            ))),
            Request::Subscribe => {
                let limit = self.config.node.max_subscriptions_per_connection;
                self.subscriptions
                    .add(connection, correlation, limit)
                    .map_err(|held| {
                        RequestError::new(
                            Kind::TooManySubscriptions,
                            format!(
                                "this connection holds {held} subscriptions already, the most it \
                                 may (max_subscriptions_per_connection = {limit})"
                            ),
                        )
                    })?;
                Ok(Some((Code::Ack, Body::Message(None))))
            }
            Request::LogsRequest(request) => self.logs(connection, correlation, &request),
        }
    }

    /// Sends a `ServiceSignal`'s signal to the process groups of the
    /// service's running instances (or of the one it names), under the
    /// request's correlation id; it is answered once the spawner has
    /// answered every signal ([`Manager::signal_answered`]).
    fn signal(
        &mut self,
        connection: ConnectionId,
        correlation: &str,
        request: &public_api::ServiceSignal,
        now: Instant,
    ) -> Answer {
        let id = &request.service_id;
        self.known(id)?;
        let signal = crate::conf::signal_by_name(&request.signal).ok_or_else(|| {
            RequestError::new(
                Kind::BadRequest,
                format!(
                    "`{}` is not a signal: expected a name such as HUP or SIGUSR1, or a number from 1 to 64",
                    request.signal
                ),
            )
        })?;
        let service = &self.registry[id];
        if let Some(index) = request.instance
            && index >= service.config.instances
        {
            return Err(RequestError::new(
                Kind::BadRequest,
                format!(
                    "{id} has {} instances; there is no instance {index}",
                    service.config.instances
                ),
            ));
        }
        let targets: Vec<(u32, u32)> = service
            .instances
            .iter()
            .filter(|i| request.instance.is_none_or(|index| index == i.index))
            .filter_map(|i| Some((i.index, i.pid?)))
            .collect();
        if targets.is_empty() {
            return Err(RequestError::new(
                Kind::BadRequest,
                format!("{id} has no process to signal: no instance of it runs"),
            ));
        }
        self.signals.insert(
            correlation.to_owned(),
            PendingSignal {
                connection,
                service: id.clone(),
                awaiting: targets.len(),
                refusals: Vec::new(),
            },
        );
        for (index, pid) in targets {
            log::info!("{id}.{index}: sending signal {signal} to pid {pid}'s process group");
            let message = signal_group(pid, signal, Some(correlation.to_owned()));
            let client = Some(correlation.to_owned());
            self.ask_spawner(message, Asked::Signal { client }, now);
        }
        Ok(None)
    }

    /// Service `id`'s definition as loaded.
    fn definition(&self, id: &str) -> public_api::ServiceDefinitionResponse {
        // The one it runs: a service a reload removed or changed keeps its
        // old definition until it is down.
        let config = &self.registry[id].config;
        let source = self.config.sources.get(id);
        let log_dir = &self.config.node.log_dir;
        let output = |target: &Output, stream: &str| match target {
            Output::Null => "null".to_owned(),
            Output::Inherit => "inherit".to_owned(),
            Output::Node => "node".to_owned(),
            Output::LogDir | Output::Path(_) => target
                .path(id, stream, 0, log_dir)
                .map_or_else(String::new, |path| path.display().to_string()),
        };
        public_api::ServiceDefinitionResponse {
            service_id: id.to_owned(),
            file: source.map_or_else(String::new, |source| source.file.display().to_string()),
            text: source.map_or_else(String::new, |source| source.text.clone()),
            command: config.command.clone(),
            user: config.user.clone(),
            group: config.group.clone(),
            work_dir: work_dir_text(config),
            description: config.description.clone(),
            requires: config.requires.clone(),
            after: config.after.clone(),
            ready: Some(match &config.ready.signal {
                ReadySignal::Started => "started".to_owned(),
                ReadySignal::Fd(fd) => format!("fd {fd}"),
                ReadySignal::Check(probe) => checks::describe(probe),
            }),
            health: config
                .health
                .as_ref()
                .map(|health| checks::describe(&health.probe)),
            instances: config.instances,
            stdout: Some(output(&config.stdout, "stdout")),
            stderr: Some(output(&config.stderr, "stderr")),
        }
    }

    pub(super) fn known(&self, id: &str) -> Result<(), RequestError> {
        if self.registry.contains_key(id) {
            Ok(())
        } else {
            Err(RequestError::new(
                Kind::UnknownService,
                format!("no service named `{id}` in the configuration"),
            ))
        }
    }

    /// Starts, stops or restarts a service; answered when it gets there.
    pub(super) fn act(
        &mut self,
        connection: ConnectionId,
        correlation: &str,
        id: &str,
        event: Event,
        now: Instant,
    ) -> Answer {
        self.known(id)?;
        if self.cluster.has(id) {
            let service = id.split_once('@').map_or(id, |(service, _)| service);
            return Err(RequestError::new(
                Kind::BadRequest,
                format!(
                    "{id} is an instance the cluster assigned; use `snow-fox-client cluster start|stop {service}`"
                ),
            ));
        }
        if event != Event::Stop && !self.spawner_alive {
            return Err(RequestError::new(
                Kind::Internal,
                "the spawner is gone; no process can be started",
            ));
        }
        let goal = if event == Event::Stop {
            Goal::Down
        } else {
            Goal::Up
        };
        if event == Event::Stop
            && let Some(service) = self.registry.get_mut(id)
        {
            service.desired = Some(Wish::Down);
            self.record_dirty.insert(id.to_owned());
        }
        let deadline = now + self.patience(id, goal);
        // A restart of a service waiting for what it requires is a start:
        // it still waits.
        let held = self.registry[id].hold.is_some();
        let along = if event == Event::Start || (event == Event::Restart && held) {
            self.start_with_requirements(id, correlation, true, now);
            Vec::new()
        } else if event == Event::Stop {
            self.stop_with_dependents(id, correlation, now)
        } else {
            if let Some(service) = self.registry.get_mut(id) {
                service.desired = Some(Wish::Up);
                self.record_dirty.insert(id.to_owned());
            }
            self.drive(id, event, correlation, now);
            Vec::new()
        };
        self.waiters.add(
            id,
            Waiter {
                connection,
                correlation: correlation.to_owned(),
                goal,
                deadline,
                along,
            },
        );
        self.settle_waiters(id, now);
        Ok(None)
    }

    /// How long a request to bring `id` up or down may take: the request
    /// timeout, or more when stopping it (and its dependents) or waiting
    /// for it and what it requires to become ready may take longer.
    pub(super) fn patience(&self, id: &str, goal: Goal) -> Duration {
        let graph = crate::conf::deps::Graph::new(&self.config.services);
        let chain = match goal {
            Goal::Up => graph.requirements(id),
            Goal::Down => {
                let mut chain = self.registry.dependents(id);
                chain.push(id.to_owned());
                chain
            }
        };
        let needed: Duration = chain
            .iter()
            .filter_map(|id| self.config.services.get(id))
            .map(|service| match goal {
                Goal::Up if service.ready.signal == ReadySignal::Started => Duration::ZERO,
                Goal::Up => service.ready.timeout,
                Goal::Down => service.stop_timeout,
            })
            .sum();
        self.config
            .node
            .request_timeout
            .max(needed + Duration::from_secs(1))
    }

    /// The `ServiceStatusResponse` payload for `services`, encoded: each
    /// service's entry is kept encoded until its instances change.
    pub(super) fn status_of<'a>(
        &self,
        services: impl IntoIterator<Item = &'a Service>,
    ) -> Arc<[u8]> {
        self.status_payload(services, None, &[])
    }

    /// [`Self::status_of`], with each running instance's metrics read at
    /// `metrics` when given, and `extra` (other encoded fields of the
    /// `ServiceStatusResponse`) after its services.
    pub(super) fn status_payload<'a>(
        &self,
        services: impl IntoIterator<Item = &'a Service>,
        metrics: Option<Instant>,
        extra: &[u8],
    ) -> Arc<[u8]> {
        const SERVICES: u32 = 1;
        const METRICS: u32 = 80;
        let mut entries = Vec::new();
        let mut measured = Vec::new();
        for service in services {
            if let Some(now) = metrics {
                for (instance, usage) in service.instances.iter().zip(&service.usage) {
                    if let Some(pid) = instance.pid {
                        measured.push(usage.metrics(
                            &service.config.id,
                            instance.index,
                            pid,
                            instance.since,
                            now,
                        ));
                    }
                }
            }
            let encode = |out: &mut Vec<u8>| {
                prost::encoding::message::encode(SERVICES, &self.status_entry(service), out);
            };
            // A service waiting for others shows what it waits for, which
            // its instances alone do not tell.
            if matches!(service.hold, Some(Hold::Start { .. })) {
                encode(&mut entries);
            } else {
                let shown = (service.desired.map(Wish::as_str), service.is_enabled());
                service
                    .status_entry
                    .append(shown, &service.instances, encode, &mut entries);
            }
        }
        for metrics in &measured {
            prost::encoding::message::encode(METRICS, metrics, &mut entries);
        }
        entries.extend_from_slice(extra);
        let mut payload = Vec::with_capacity(entries.len() + 8);
        prost::encoding::encode_key(
            PAYLOAD_SERVICE_STATUS_RESPONSE,
            prost::encoding::WireType::LengthDelimited,
            &mut payload,
        );
        prost::encoding::encode_varint(entries.len() as u64, &mut payload);
        payload.extend_from_slice(&entries);
        Arc::from(payload)
    }

    pub(super) fn status_entry(&self, service: &Service) -> service_status_response::Service {
        let waiting = match service.hold {
            Some(Hold::Start { .. }) => {
                let waiting = self.waiting_for(&service.config.id);
                (!waiting.is_empty()).then(|| format!("waiting for {}", waiting.join(", ")))
            }
            _ => None,
        };
        service_status_response::Service {
            id: service.config.id.clone(),
            status: self.colour_of(service),
            instances: service
                .instances
                .iter()
                .map(|i| {
                    let mut shown = instance_status(i, &self.clock);
                    if waiting.is_some() && i.state.is_down() {
                        shown.reason.clone_from(&waiting);
                    }
                    shown
                })
                .collect(),
            description: service.config.description.clone(),
            enabled: Some(service.is_enabled()),
            desired: Some(service.desired.map_or("auto", Wish::as_str).to_owned()),
            origin: self
                .cluster
                .has(&service.config.id)
                .then(|| "cluster".to_owned()),
        }
    }

    /// Node info. Without details and with everything green, its payload
    /// is kept encoded: only the configuration's versions in it can
    /// change, and they are checked on each use.
    pub(super) fn node_info(&self, details: bool) -> Body {
        let subsystems = self.subsystems(details);
        if details || !subsystems.is_empty() {
            let response = self.node_info_response(subsystems, details);
            return Body::Message(Some(Payload::NodeInfoResponse(response)));
        }
        let encode = || {
            let mut payload = Vec::new();
            let response = self.node_info_response(Vec::new(), false);
            prost::encoding::message::encode(PAYLOAD_NODE_INFO_RESPONSE, &response, &mut payload);
            Arc::<[u8]>::from(payload)
        };
        let mut cache = self.green_node_info.borrow_mut();
        let (effective, symbolic) = (&self.config.effective_version, &self.config.node.label);
        match &*cache {
            Some(green) if green.effective == *effective && green.symbolic == *symbolic => {
                debug_assert!(
                    green.payload == encode(),
                    "the cached node info no longer matches the node"
                );
                Body::Encoded(green.payload.clone())
            }
            _ => {
                let payload = encode();
                *cache = Some(GreenNodeInfo {
                    effective: effective.clone(),
                    symbolic: symbolic.clone(),
                    payload: payload.clone(),
                });
                Body::Encoded(payload)
            }
        }
    }

    pub(super) fn node_info_response(
        &self,
        subsystems: Vec<node_info_response::SubSystem>,
        details: bool,
    ) -> NodeInfoResponse {
        NodeInfoResponse {
            node: Some(node_info_response::NodeInfo {
                name: self.identity.name.clone(),
                version: node_info_response::NodeVersion {
                    commit: self.identity.commit.clone(),
                    taint: Some(self.identity.taint.clone()),
                    version: Some(self.identity.version.clone()),
                },
                config: Some(node_info_response::ConfigVersion {
                    effective: self.config.effective_version.clone(),
                    symbolic: self.config.node.label.clone(),
                }),
            }),
            overall: Some(overall(&subsystems)),
            details: if details { subsystems } else { Vec::new() },
        }
    }

    /// The node's subsystems, or without `details` only those that are
    /// not green: all that the overall status needs, so that a plain node
    /// info formats no text for what is well.
    pub(super) fn subsystems(&self, details: bool) -> Vec<node_info_response::SubSystem> {
        let mut subsystems = Vec::new();
        let mut add = |name: &str, status: node_info_response::SystemStatus| {
            if details || status.colour != StatusColour::Green as i32 {
                subsystems.push(node_info_response::SubSystem {
                    name: name.to_owned(),
                    status,
                });
            }
        };
        // Green reasons are only read in details.
        let green = |reason: &dyn Fn() -> String| {
            let reason = if details { reason() } else { String::new() };
            system_status(StatusColour::Green, StatusCode::Ok, reason)
        };
        let daemon = if self.shutdown.is_some() {
            system_status(
                StatusColour::Yellow,
                StatusCode::ShuttingDown,
                "shutting down".to_owned(),
            )
        } else {
            green(&|| format!("running as {}", self.identity.user))
        };
        let spawner = if self.spawner_alive {
            green(&|| format!("running ({})", self.identity.spawner_mode))
        } else {
            system_status(
                StatusColour::Red,
                StatusCode::RoleDown,
                format!("the spawner ({}) is gone", self.identity.spawner_mode),
            )
        };
        let config = match &self.reload_error {
            None => green(&|| {
                format!(
                    "loaded {} ({}) from {}",
                    self.config.effective_version,
                    self.config.node.label,
                    self.config.dir.display()
                )
            }),
            Some(error) => system_status(
                StatusColour::Red,
                StatusCode::ConfigInvalid,
                format!(
                    "the last reload failed, {} still runs: {error}",
                    self.config.effective_version
                ),
            ),
        };
        add("daemon", daemon);
        add("manager", green(&|| "running".to_owned()));
        add("spawner", spawner);
        add("io", green(&|| "running".to_owned()));
        add("config", config);
        add("state", self.state_status(details));
        if let Some(cluster) = self.cluster_status() {
            add("cluster", cluster);
        }
        if let Some(cgroups) = &self.cgroups {
            let status = if cgroups.available {
                green(&|| cgroups.description.clone())
            } else {
                system_status(
                    StatusColour::Yellow,
                    StatusCode::Failed,
                    format!(
                        "{}; services with limits cannot start, stops kill process groups only",
                        cgroups.description
                    ),
                )
            };
            add("cgroups", status);
        }
        for service in self.registry.values() {
            if details || !self.is_green(service) {
                add(&service.config.id, self.colour_of(service));
            }
        }
        subsystems
    }

    /// The `state` subsystem: red while the record cannot be written,
    /// yellow when the one found at start was ignored.
    pub(super) fn state_status(
        &self,
        details: bool,
    ) -> public_api::node_info_response::SystemStatus {
        let health = &self.record_health;
        let dir = self.config.node.state_dir.display();
        match (&health.write_error, &health.unreadable_at_start) {
            (Some(error), _) => system_status(
                StatusColour::Red,
                StatusCode::Failed,
                format!("{error}; a node crash now forgets what changed since the last write"),
            ),
            (None, Some(error)) => system_status(
                StatusColour::Yellow,
                StatusCode::Failed,
                format!("ignored at start, nothing adopted: {error}"),
            ),
            (None, None) if !details => {
                system_status(StatusColour::Green, StatusCode::Ok, String::new())
            }
            (None, None) => system_status(
                StatusColour::Green,
                StatusCode::Ok,
                format!(
                    "record in {dir}; {} instances adopted at start",
                    health.adopted
                ),
            ),
        }
    }

    pub(super) fn trace(&self, correlation: &str) -> TraceResponse {
        let table = self.tracer.lock();
        match table.get(correlation) {
            Some((state, hops)) => TraceResponse {
                state: state.as_str().to_owned(),
                hops: hops
                    .iter()
                    .map(|hop| trace_response::Hop {
                        at_unix_us: hop.at_unix_us,
                        from_role: hop.from.as_str().to_owned(),
                        to_role: hop.to.as_str().to_owned(),
                        protocol: hop.protocol.as_str().to_owned(),
                        code: hop.code.to_owned(),
                    })
                    .collect(),
            },
            None => TraceResponse {
                state: "unknown".to_owned(),
                hops: Vec::new(),
            },
        }
    }
}

impl Manager {
    /// Resolves a `LogsRequest` to the files of the streams it names and
    /// hands it to the log reader, which answers it.
    fn logs(
        &mut self,
        connection: ConnectionId,
        correlation: &str,
        request: &public_api::LogsRequest,
    ) -> Answer {
        let named: Vec<&str> = request
            .service_ids
            .iter()
            .map(String::as_str)
            .filter(|id| !id.is_empty())
            .collect();
        let ids: Vec<String> = if named.is_empty() || named.contains(&"all") {
            self.config.services.keys().cloned().collect()
        } else {
            for id in &named {
                self.known(id)?;
            }
            named.iter().map(|id| (*id).to_owned()).collect()
        };
        let streams: &[&'static str] = match request.stream() {
            public_api::logs_request::Stream::Both => &["stdout", "stderr"],
            public_api::logs_request::Stream::Stdout => &["stdout"],
            public_api::logs_request::Stream::Stderr => &["stderr"],
        };
        let log_dir = &self.config.node.log_dir;
        let mut files = Vec::new();
        for id in &ids {
            let Some(config) = self.config.services.get(id) else {
                continue;
            };
            let instances: Vec<u32> = match request.instance {
                Some(index) if index >= config.instances => {
                    return Err(RequestError::new(
                        Kind::BadRequest,
                        format!("{id} has no instance {index} (it has {})", config.instances),
                    ));
                }
                Some(index) => vec![index],
                None => (0..config.instances).collect(),
            };
            for instance in instances {
                for stream in streams {
                    let output = if *stream == "stdout" {
                        &config.stdout
                    } else {
                        &config.stderr
                    };
                    if let Some(base) = output.path(id, stream, instance, log_dir) {
                        files.push(logs::StreamFiles {
                            service_id: id.clone(),
                            instance,
                            stream,
                            base,
                            keep: config.log_keep,
                        });
                    }
                }
            }
        }
        if files.is_empty() {
            return Err(RequestError::new(
                Kind::BadRequest,
                format!(
                    "no output of {} is captured in files (its stdout and stderr are \
                     \"null\", \"inherit\" or \"node\")",
                    ids.join(", ")
                ),
            ));
        }
        let job = logs::Job {
            connection,
            correlation: correlation.to_owned(),
            streams: logs::dedup(files),
            lines: request.lines.unwrap_or_default() as usize,
            follow: request.follow.unwrap_or_default(),
            since_unix_us: request.since_unix_us.unwrap_or_default(),
        };
        match self.log_reader.serve(job) {
            Ok(true) => Ok(None),
            Ok(false) => Err(RequestError::new(
                Kind::Busy,
                "the log reader has too many requests waiting; try again",
            )),
            Err(error) => Err(RequestError::new(
                Kind::Internal,
                format!("cannot start the log reader: {error}"),
            )),
        }
    }
}
