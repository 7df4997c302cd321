//! Layering: defaults, the TOML file, `IAP_PROXY_*` variables and flags merged with the
//! `config` crate, each value remembering where it came from so errors can say so.

use super::*;

const ENV_PREFIX: &str = "IAP_PROXY_";
const ENV_CONFIG: &str = "IAP_PROXY_CONFIG";
// `Environment` labels every value it produces with this origin.
const ENV_ORIGIN: &str = "the environment";

pub(super) fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

pub(super) fn flag_name(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

/// Flags actually given, as config overrides.
#[derive(Default)]
pub(super) struct Flags(Vec<(&'static str, ValueKind)>);

impl Flags {
    pub(super) fn string(&mut self, key: &'static str, value: Option<&str>) {
        if let Some(v) = value {
            self.0.push((key, v.to_owned().into()));
        }
    }
    pub(super) fn path(&mut self, key: &'static str, value: Option<&Path>) {
        self.string(key, value.map(|p| p.to_string_lossy()).as_deref());
    }
    pub(super) fn switch(&mut self, key: &'static str, given: bool) {
        if given {
            self.0.push((key, true.into()));
        }
    }
}

/// The merged layers, plus what is needed to say where each value came from.
pub(super) struct Layered {
    values: Map<String, Value>,
    flags: Vec<&'static str>,
    pub(super) errors: Vec<String>,
    /// Put before every message: which `[[routes]]` table it is about.
    context: String,
}

impl Layered {
    pub(super) fn new(
        config: Option<&Path>,
        env: &Env,
        defaults: Vec<(&'static str, ValueKind)>,
        flags: Flags,
    ) -> Layered {
        let mut errors = Vec::new();
        let config = config
            .map(Path::to_path_buf)
            .or_else(|| env.get(ENV_CONFIG).map(PathBuf::from));
        // Loaded on its own first so that a bad file is one reported problem, not the end of validation.
        let file = config.and_then(|path| match load_file(&path) {
            Ok(file) => Some(file),
            Err(e) => {
                errors.push(e);
                None
            }
        });

        let mut env_source = Map::new();
        let mut unknown_env: Vec<&String> = Vec::new();
        for (name, value) in env.vars() {
            let Some(suffix) = strip_prefix_ignore_case(name, ENV_PREFIX) else {
                continue;
            };
            if KEYS.contains(&suffix.to_ascii_lowercase().as_str()) {
                env_source.insert(name.clone(), value.clone());
            } else if !name.eq_ignore_ascii_case(ENV_CONFIG) {
                unknown_env.push(name);
            }
        }
        unknown_env.sort();
        for name in unknown_env {
            errors.push(format!(
                "unknown environment variable {name}: probably a typo; known ones are {}",
                KEYS.map(env_name).join(", ")
            ));
        }

        let flag_keys = flags.0.iter().map(|(k, _)| *k).collect();
        let values = match build(defaults, file, env_source, flags) {
            Ok(values) => values,
            Err(e) => {
                errors.push(format!("cannot merge settings: {e}"));
                Map::new()
            }
        };
        Layered {
            values,
            flags: flag_keys,
            errors,
            context: String::new(),
        }
    }

    pub(super) fn has(&self, key: &str) -> bool {
        self.values
            .get(key)
            .is_some_and(|v| !matches!(v.kind, ValueKind::Nil))
    }

    /// Removes the file's `[[routes]]` tables from the top-level values and returns them;
    /// unknown or process-wide keys in a table are reported here.
    pub(super) fn take_routes(&mut self) -> Vec<Map<String, Value>> {
        let Some(value) = self.values.remove("routes") else {
            return Vec::new();
        };
        let ValueKind::Array(items) = value.kind else {
            self.errors.push(
                "config file: `routes` must be an array of tables: write each as [[routes]]".into(),
            );
            return Vec::new();
        };
        let mut tables = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let ValueKind::Table(table) = item.kind else {
                self.errors.push(format!(
                    "config file: routes entry {} is not a table; write it as [[routes]]",
                    i + 1
                ));
                continue;
            };
            let mut bad: Vec<&String> = table
                .keys()
                .filter(|k| !routes::ROUTE_KEYS.contains(&k.as_str()))
                .collect();
            bad.sort();
            for key in bad {
                let why = if KEYS.contains(&key.as_str()) {
                    "is process-wide; set it at the top level of the file"
                } else {
                    "is not a route key"
                };
                self.errors.push(format!(
                    "config file: [[routes]] #{}: `{key}` {why}; route keys are {}",
                    i + 1,
                    routes::ROUTE_KEYS.join(", ")
                ));
            }
            for required in ["listen", "upstream"] {
                if !table.contains_key(required) {
                    self.errors.push(format!(
                        "config file: [[routes]] #{} needs its own `{required}` (only the other route keys are inherited)",
                        i + 1
                    ));
                }
            }
            tables.push(table);
        }
        tables
    }

    /// The values one route sees: the top level's, overlaid with the route's table.
    pub(super) fn route(&self, index: usize, table: Map<String, Value>) -> Layered {
        let mut values = self.values.clone();
        let name = table
            .get("name")
            .and_then(|v| v.clone().into_string().ok())
            .map(|n| format!(" (`{n}`)"))
            .unwrap_or_default();
        values.extend(table);
        Layered {
            values,
            flags: self.flags.clone(),
            errors: Vec::new(),
            context: format!("[[routes]] #{}{name}: ", index + 1),
        }
    }

    pub(super) fn into_errors(self) -> ConfigErrors {
        ConfigErrors(self.errors)
    }

    pub(super) fn origin(&self, key: &str) -> String {
        match self.values.get(key).and_then(Value::origin) {
            Some(ENV_ORIGIN) => env_name(key),
            Some(file) => format!("config file {file}"),
            None if self.flags.contains(&key) => flag_name(key),
            None => "default".into(),
        }
    }

    /// `key = "value" (from ORIGIN)`, the prefix of every message about a value.
    pub(super) fn describe(&self, key: &str) -> String {
        let value = match self.values.get(key).map(|v| &v.kind) {
            Some(ValueKind::String(s)) => format!("{s:?}"),
            Some(other) => other.to_string(),
            None => "(unset)".into(),
        };
        format!("{key} = {value} (from {})", self.origin(key))
    }

    pub(super) fn problem(&mut self, key: &str, what: &str) {
        let message = format!("{}{}: {what}", self.context, self.describe(key));
        self.errors.push(message);
    }

    pub(super) fn string(&mut self, key: &str) -> Option<String> {
        match self.values.get(key).map(|v| &v.kind) {
            None | Some(ValueKind::Nil) => None,
            Some(ValueKind::String(s)) => Some(s.clone()),
            Some(_) => {
                self.problem(key, "must be a string; quote it in TOML");
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, key: &str) -> bool {
        let parsed = match self.values.get(key).map(|v| &v.kind) {
            None | Some(ValueKind::Nil) => Some(false),
            Some(ValueKind::Boolean(b)) => Some(*b),
            Some(ValueKind::String(s)) => match s.to_ascii_lowercase().as_str() {
                "true" | "1" => Some(true),
                "false" | "0" => Some(false),
                _ => None,
            },
            Some(_) => None,
        };
        parsed.unwrap_or_else(|| {
            self.problem(key, "must be true or false");
            false
        })
    }

    pub(super) fn parsed<T: FromStr<Err = String>>(&mut self, key: &str) -> Option<T> {
        let text = self.string(key)?;
        T::from_str(&text).map_err(|e| self.problem(key, &e)).ok()
    }

    pub(super) fn number(&mut self, key: &str, min: u64, unit: &str) -> Option<u64> {
        let parsed = match self.values.get(key).map(|v| &v.kind) {
            None | Some(ValueKind::Nil) => return None,
            Some(ValueKind::I64(n)) => u64::try_from(*n).ok(),
            Some(ValueKind::U64(n)) => Some(*n),
            Some(ValueKind::I128(n)) => u64::try_from(*n).ok(),
            Some(ValueKind::U128(n)) => u64::try_from(*n).ok(),
            Some(ValueKind::String(s)) => s.trim().parse::<u64>().ok(),
            Some(_) => None,
        };
        match parsed {
            Some(n) if n >= min => Some(n),
            _ => {
                self.problem(
                    key,
                    &format!("must be a whole number of {unit}, at least {min}"),
                );
                None
            }
        }
    }

    pub(super) fn seconds(&mut self, key: &str, min: u64) -> Option<Duration> {
        self.number(key, min, "seconds").map(Duration::from_secs)
    }

    pub(super) fn count(&mut self, key: &str, min: u64, unit: &str) -> Option<usize> {
        self.number(key, min, unit)
            .and_then(|n| usize::try_from(n).ok())
    }

    /// A listen address: `unix:PATH`, or IP:port under the loopback rule.
    pub(super) fn listen(&mut self, key: &str, allow_non_loopback: bool) -> Option<ListenAddr> {
        let text = self.string(key)?;
        let text = text.trim();
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                self.problem(
                    key,
                    "names no socket path; use e.g. unix:/run/iap-proxy.sock",
                );
                return None;
            }
            return Some(ListenAddr::Unix(PathBuf::from(path)));
        }
        self.socket_addr(key, text, allow_non_loopback)
            .map(ListenAddr::Tcp)
    }

    /// The admin listener: IP:port only, under the same loopback rule as `listen`.
    pub(super) fn admin_listen(&mut self, allow_non_loopback: bool) -> Option<SocketAddr> {
        let text = self.string("admin_listen")?;
        self.socket_addr("admin_listen", text.trim(), allow_non_loopback)
    }

    fn socket_addr(
        &mut self,
        key: &str,
        text: &str,
        allow_non_loopback: bool,
    ) -> Option<SocketAddr> {
        let Ok(addr) = text.parse::<SocketAddr>() else {
            self.problem(
                key,
                "not an IP:port address; use e.g. 127.0.0.1:8080 or [::1]:8080 (or unix:PATH for listen)",
            );
            return None;
        };
        if !allow_non_loopback && !is_loopback_ip(addr.ip()) {
            self.problem(
                key,
                "not a loopback address, and the proxy adds credentials to every request: anyone who \
                 can reach that port acts as the service account; listen on 127.0.0.1 or pass \
                 --allow-non-loopback (IAP_PROXY_ALLOW_NON_LOOPBACK=true)",
            );
            return None;
        }
        Some(addr)
    }

    /// A path that must name a readable file now.
    pub(super) fn existing_file(&mut self, key: &str) -> Option<PathBuf> {
        let path = PathBuf::from(self.string(key)?);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Some(path),
            Ok(_) => {
                self.problem(key, "is not a file");
                None
            }
            Err(e) => {
                self.problem(key, &format!("cannot be read: {e}"));
                None
            }
        }
    }

    pub(super) fn required(&mut self, key: &str, example: &str) -> Option<String> {
        match self.string(key) {
            Some(s) if !s.trim().is_empty() => Some(s),
            Some(_) => {
                self.problem(key, &format!("must not be empty; e.g. {example}"));
                None
            }
            None => {
                if !self.values.contains_key(key) {
                    self.errors.push(format!(
                        "{key} is required: pass {}, set {} or put {key} = \"...\" in the config file (e.g. {example})",
                        flag_name(key),
                        env_name(key),
                    ));
                }
                None
            }
        }
    }

    pub(super) fn audience(&mut self) -> Option<String> {
        self.required(
            "audience",
            "123-abc.apps.googleusercontent.com, the IAP OAuth client ID",
        )
    }

    pub(super) fn upstream(&mut self) -> Option<Url> {
        let text = self.required("upstream", "https://app.example.com")?;
        let url = match Url::parse(text.trim()) {
            Ok(url) => url,
            Err(e) => {
                self.problem(
                    "upstream",
                    &format!("not an absolute URL ({e}); use e.g. https://app.example.com"),
                );
                return None;
            }
        };
        let mut problems = Vec::new();
        let loopback = match url.host() {
            None => {
                problems.push("has no host; use e.g. https://app.example.com");
                false
            }
            Some(host) => is_loopback_host(host),
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => problems.push(
                "uses http to a non-loopback host, which would send ID tokens across the network in clear; use https",
            ),
            _ => problems.push("scheme must be https (or http to localhost)"),
        }
        if !url.username().is_empty() || url.password().is_some() {
            problems
                .push("must not contain user:password@; the proxy authenticates with the ID token");
        }
        if url.query().is_some() {
            problems.push("must not have a ?query; the client's own query is forwarded");
        }
        if url.fragment().is_some() {
            problems.push("must not have a #fragment");
        }
        for p in &problems {
            self.problem("upstream", p);
        }
        problems.is_empty().then_some(url)
    }

    pub(super) fn credentials(&mut self) -> Option<PathBuf> {
        let path = PathBuf::from(self.string("credentials")?);
        // The gcloud CLI, not a file; `./gcloud` names a file of that name.
        if path == Path::new("gcloud") {
            return Some(path);
        }
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Some(path),
            Ok(_) => {
                self.problem(
                    "credentials",
                    "is not a file; point it at a service account key or ADC JSON file",
                );
                None
            }
            Err(e) => {
                self.problem("credentials", &format!("cannot be used: {e}"));
                None
            }
        }
    }

    pub(super) fn upstream_ca(&mut self) -> Option<PathBuf> {
        let path = PathBuf::from(self.string("upstream_ca")?);
        match std::fs::read(&path) {
            Ok(pem) if String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") => {
                Some(path)
            }
            Ok(_) => {
                self.problem(
                    "upstream_ca",
                    "contains no PEM certificate (-----BEGIN CERTIFICATE-----)",
                );
                None
            }
            Err(e) => {
                self.problem("upstream_ca", &format!("cannot be read: {e}"));
                None
            }
        }
    }
}

pub(super) fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Reads the TOML file and rejects keys we do not know, which are almost surely typos.
pub(super) fn load_file(path: &Path) -> Result<Config, String> {
    let file = Config::builder()
        .add_source(File::from(path).format(FileFormat::Toml).required(true))
        .build()
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    let table = file
        .collect()
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    let mut unknown: Vec<&String> = table
        .keys()
        .filter(|k| !KEYS.contains(&k.as_str()) && k.as_str() != "routes")
        .collect();
    if unknown.is_empty() {
        return Ok(file);
    }
    unknown.sort();
    let unknown: Vec<String> = unknown.iter().map(|k| format!("`{k}`")).collect();
    Err(format!(
        "config file {}: unknown key {}; known keys are {}",
        path.display(),
        unknown.join(", "),
        KEYS.join(", ")
    ))
}

pub(super) fn build(
    defaults: Vec<(&'static str, ValueKind)>,
    file: Option<Config>,
    env: Map<String, String>,
    flags: Flags,
) -> Result<Map<String, Value>, ConfigError> {
    let mut builder = Config::builder();
    for (key, value) in defaults {
        builder = builder.set_default(key, value)?;
    }
    if let Some(file) = file {
        builder = builder.add_source(file);
    }
    // try_parsing stays off: it would turn an audience like "0123" into 123; values are typed by `Layered`.
    builder = builder.add_source(
        Environment::with_prefix("IAP_PROXY")
            .prefix_separator("_")
            .ignore_empty(true)
            .source(Some(env)),
    );
    for (key, value) in flags.0 {
        builder = builder.set_override(key, value)?;
    }
    builder.build()?.collect()
}
