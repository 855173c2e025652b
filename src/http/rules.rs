//! The HTTP routes of the contract, read from the `google.api.http` rules in the descriptors.
//!
//! The rules live in `proto/contextd/v1/*.proto` (the convention grpc-gateway, Envoy's
//! transcoder and Google's API gateways share), so the routes, the OpenAPI document and the
//! gRPC methods cannot drift apart. axum's router cannot register `{id}:verb` segments, so
//! matching is done here: the verb follows the last `:` of the last segment, and path
//! variables are percent-decoded after the split (a session id holding `:` is sent as `%3A`).

use std::borrow::Cow;

use http::Method;
use percent_encoding::percent_decode_str;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor, Value};

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Must equal the request's segment.
    Literal(String),
    /// Binds one whole segment to the named request field.
    Variable(String),
}

/// A path template such as `/v1/sessions/{session_id}:interact`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathTemplate {
    segments: Vec<Segment>,
    verb: Option<String>,
}

impl PathTemplate {
    /// Parses the template syntax contextd's rules use: literal segments, `{field}` segments
    /// and an optional `:verb` suffix.
    pub(crate) fn parse(template: &str) -> Result<Self, String> {
        let path = template
            .strip_prefix('/')
            .ok_or_else(|| format!("HTTP rule path '{template}' must start with '/'"))?;
        let (path, verb) = match path.rfind(':') {
            Some(at) if !path[at..].contains('/') && !path[at..].contains('}') => {
                (&path[..at], Some(path[at + 1..].to_owned()))
            }
            _ => (path, None),
        };
        let segments = path
            .split('/')
            .map(|segment| match segment.strip_prefix('{') {
                Some(rest) => rest
                    .strip_suffix('}')
                    .filter(|name| !name.is_empty() && !name.contains(['=', '*']))
                    .map(|name| Segment::Variable(name.to_owned()))
                    .ok_or_else(|| {
                        format!("unsupported path variable '{segment}' in '{template}'")
                    }),
                None if segment.is_empty() || segment.contains(['{', '}', '*']) => Err(format!(
                    "unsupported path segment '{segment}' in '{template}'"
                )),
                None => Ok(Segment::Literal(segment.to_owned())),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { segments, verb })
    }

    /// Matches a request path, returning the decoded variables in template order.
    fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let path = path.strip_prefix('/')?;
        let path = match &self.verb {
            Some(verb) => {
                let (rest, found) = path.rsplit_once(':')?;
                if found != verb || found.contains('/') {
                    return None;
                }
                rest
            }
            None => path,
        };
        let mut parts = path.split('/');
        let mut variables = Vec::new();
        for segment in &self.segments {
            let part = parts.next()?;
            match segment {
                Segment::Literal(literal) => {
                    if part != literal {
                        return None;
                    }
                }
                Segment::Variable(name) => {
                    if part.is_empty() {
                        return None;
                    }
                    let value = percent_decode_str(part).decode_utf8().ok()?;
                    variables.push((name.clone(), value.into_owned()));
                }
            }
        }
        parts.next().is_none().then_some(variables)
    }

    /// The variable names, in order.
    pub(crate) fn variables(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|segment| match segment {
            Segment::Variable(name) => Some(name.as_str()),
            Segment::Literal(_) => None,
        })
    }
}

/// Where a request's body goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyRule {
    /// No body: every field not bound by the path comes from the query string.
    None,
    /// The whole body is the request message (`body: "*"`).
    Whole,
    /// The body is the named top-level field.
    Field(String),
}

/// One HTTP route of one RPC.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// The HTTP method.
    pub(crate) method: Method,
    /// The path template.
    pub(crate) path: PathTemplate,
    /// Where the body goes.
    pub(crate) body: BodyRule,
    /// The RPC.
    pub(crate) rpc: MethodDescriptor,
    /// The RPC's gRPC path, `/contextd.v1.SessionService/GetSession`.
    pub(crate) grpc_path: String,
}

/// A matched route and its path variables.
pub(crate) struct Matched<'a> {
    /// The route.
    pub(crate) route: &'a Route,
    /// The path variables, decoded.
    pub(crate) variables: Vec<(String, String)>,
}

/// What matching a request found.
pub(crate) enum Lookup<'a> {
    /// A route serves this method and path.
    Found(Matched<'a>),
    /// Routes serve this path, but with other methods (the `Allow` list).
    WrongMethod(Vec<Method>),
    /// No route serves this path.
    NotFound,
}

/// Every HTTP route of the contract.
#[derive(Debug, Clone)]
pub(crate) struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Reads the `google.api.http` rule of every method of every service in `package`.
    pub(crate) fn from_pool(pool: &DescriptorPool, package: &str) -> Result<Self, String> {
        let extension = pool
            .get_extension_by_name("google.api.http")
            .ok_or("the descriptors lack google.api.http (google/api/annotations.proto)")?;
        let mut routes = Vec::new();
        for service in pool.services().filter(|s| s.package_name() == package) {
            for rpc in service.methods() {
                let options = rpc.options();
                if !options.has_extension(&extension) {
                    continue;
                }
                let rule = options.get_extension(&extension);
                let Some(rule) = rule.as_message() else {
                    continue;
                };
                collect_rule(rule, &rpc, &mut routes)?;
            }
        }
        // Routes with a verb first: `/v1/sessions/a:b` is GetSession of `a:b` only when no
        // route has the verb `b`.
        routes.sort_by_key(|route| route.path.verb.is_none());
        Ok(Self { routes })
    }

    /// Every route.
    pub(crate) fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route serving `method` on `path`.
    pub(crate) fn lookup(&self, method: &Method, path: &str) -> Lookup<'_> {
        let mut allowed = Vec::new();
        for route in &self.routes {
            if let Some(variables) = route.path.matches(path) {
                if route.method == *method {
                    return Lookup::Found(Matched { route, variables });
                }
                if !allowed.contains(&route.method) {
                    allowed.push(route.method.clone());
                }
            }
        }
        if allowed.is_empty() {
            Lookup::NotFound
        } else {
            Lookup::WrongMethod(allowed)
        }
    }
}

/// Adds the routes of one `HttpRule` and its additional bindings.
fn collect_rule(
    rule: &DynamicMessage,
    rpc: &MethodDescriptor,
    routes: &mut Vec<Route>,
) -> Result<(), String> {
    let text = |name: &str| -> Cow<'_, str> {
        match rule.get_field_by_name(name) {
            Some(value) => match value.as_str() {
                Some(s) => Cow::Owned(s.to_owned()),
                None => Cow::Borrowed(""),
            },
            None => Cow::Borrowed(""),
        }
    };
    let patterns = [
        ("get", Method::GET),
        ("put", Method::PUT),
        ("post", Method::POST),
        ("delete", Method::DELETE),
        ("patch", Method::PATCH),
    ];
    let found = patterns.into_iter().find_map(|(name, method)| {
        rule.has_field_by_name(name)
            .then(|| (method, text(name).into_owned()))
    });
    if let Some((method, template)) = found {
        let body = match &*text("body") {
            "" => BodyRule::None,
            "*" => BodyRule::Whole,
            field => BodyRule::Field(field.to_owned()),
        };
        let path = PathTemplate::parse(&template)?;
        for variable in path.variables() {
            if rpc.input().get_field_by_name(variable).is_none() {
                return Err(format!(
                    "HTTP rule of {} binds '{variable}', which {} does not have",
                    rpc.full_name(),
                    rpc.input().full_name()
                ));
            }
        }
        routes.push(Route {
            method,
            path,
            body,
            grpc_path: format!("/{}/{}", rpc.parent_service().full_name(), rpc.name()),
            rpc: rpc.clone(),
        });
    }
    if let Some(Value::List(bindings)) = rule
        .get_field_by_name("additional_bindings")
        .map(Cow::into_owned)
    {
        for binding in bindings {
            if let Some(binding) = binding.as_message() {
                collect_rule(binding, rpc, routes)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let pool = DescriptorPool::decode(crate::api::FILE_DESCRIPTOR_SET).unwrap();
        RouteTable::from_pool(&pool, "contextd.v1").unwrap()
    }

    fn found(table: &RouteTable, method: Method, path: &str) -> (String, Vec<(String, String)>) {
        match table.lookup(&method, path) {
            Lookup::Found(m) => (m.route.rpc.name().to_owned(), m.variables),
            _ => panic!("{method} {path} matched nothing"),
        }
    }

    #[test]
    fn every_route_of_the_contract() {
        let table = table();
        let cases = [
            (Method::POST, "/v1/sessions", "CreateSession"),
            (Method::GET, "/v1/sessions", "ListSessions"),
            (Method::GET, "/v1/sessions/s1", "GetSession"),
            (Method::PATCH, "/v1/sessions/s1", "UpdateSession"),
            (Method::DELETE, "/v1/sessions/s1", "DeleteSession"),
            (Method::GET, "/v1/sessions/s1/messages", "ListMessages"),
            (Method::POST, "/v1/sessions/s1:preview", "PreviewContext"),
            (Method::POST, "/v1/sessions/s1:interact", "Interact"),
            (Method::POST, "/v1/sessions/s1:stream", "StreamResponse"),
            (Method::GET, "/v1/tools", "ListTools"),
            (Method::POST, "/v1/tools/context_get:call", "CallTool"),
            (Method::GET, "/v1/models", "ListModels"),
            (Method::POST, "/v1/keys", "CreateKey"),
            (Method::GET, "/v1/keys", "ListKeys"),
            (Method::POST, "/v1/keys/3f2a9c01b7de:revoke", "RevokeKey"),
            (Method::GET, "/v1/tenants", "ListTenants"),
            (Method::GET, "/v1/tenants/acme:export", "ExportTenant"),
            (Method::DELETE, "/v1/tenants/acme", "DeleteTenant"),
        ];
        let count = cases.len();
        for (method, path, rpc) in cases {
            assert_eq!(found(&table, method, path).0, rpc, "{path}");
        }
        assert_eq!(table.routes().len(), count);
    }

    #[test]
    fn the_verb_follows_the_last_colon_and_variables_are_decoded_after() {
        let table = table();
        let (rpc, vars) = found(&table, Method::POST, "/v1/sessions/a:b:interact");
        assert_eq!(rpc, "Interact");
        assert_eq!(vars, [("session_id".to_owned(), "a:b".to_owned())]);
        let (rpc, vars) = found(&table, Method::POST, "/v1/sessions/a%3Ainteract:interact");
        assert_eq!(rpc, "Interact");
        assert_eq!(vars[0].1, "a:interact");
        // No route has the verb `b`: the whole segment is the id.
        let (rpc, vars) = found(&table, Method::GET, "/v1/sessions/a:b");
        assert_eq!(rpc, "GetSession");
        assert_eq!(vars[0].1, "a:b");
        let (_, vars) = found(&table, Method::GET, "/v1/sessions/a%2Fb");
        assert_eq!(vars[0].1, "a/b");
    }

    #[test]
    fn other_methods_and_unknown_paths() {
        let table = table();
        match table.lookup(&Method::PUT, "/v1/sessions/s1") {
            Lookup::WrongMethod(allowed) => {
                assert!(allowed.contains(&Method::GET) && allowed.contains(&Method::PATCH))
            }
            _ => panic!("PUT should be a wrong method"),
        }
        assert!(matches!(
            table.lookup(&Method::GET, "/v1/sessions/s1/nothing"),
            Lookup::NotFound
        ));
        assert!(matches!(
            table.lookup(&Method::GET, "/v1/sessions/"),
            Lookup::NotFound
        ));
        assert!(matches!(
            table.lookup(&Method::POST, "/v1/sessions/s1:explode"),
            Lookup::NotFound | Lookup::WrongMethod(_)
        ));
    }

    #[test]
    fn the_openapi_document_lists_exactly_the_served_routes() {
        let table = table();
        let document: serde_json::Value =
            serde_json::from_str(include_str!("../../openapi/openapi.json")).unwrap();
        let mut documented = 0;
        for (path, operations) in document["paths"].as_object().unwrap() {
            if !path.starts_with("/v1/") {
                continue;
            }
            // `{sessionId}` → a concrete id, so the template matcher sees a real path.
            let concrete = path.replace("{sessionId}", "s1").replace("{name}", "t1");
            for method in operations.as_object().unwrap().keys() {
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                assert!(
                    matches!(table.lookup(&method, &concrete), Lookup::Found(_)),
                    "{method} {path} is documented but not served"
                );
                documented += 1;
            }
        }
        assert_eq!(
            documented,
            table.routes().len(),
            "every served route is documented"
        );
    }

    #[test]
    fn templates_outside_the_supported_syntax_are_refused() {
        assert!(PathTemplate::parse("v1/x").is_err());
        assert!(PathTemplate::parse("/v1/{name=projects/*}").is_err());
        assert!(PathTemplate::parse("/v1/**").is_err());
        assert!(PathTemplate::parse("/v1/{a}:go").unwrap().verb.is_some());
    }
}
