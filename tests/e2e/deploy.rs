//! The deployment files, checked without a container engine (none runs where these
//! tests run): the compose file against the Compose specification's schema, the
//! Kubernetes manifests against Kubernetes' schemas (strict: no unknown field), the
//! Dockerfile with hadolint, every configuration key they set accepted by the binary,
//! and every metric the Prometheus rules and the Grafana dashboard use exported by
//! the code. The validators come from PyPI (`.ci/run` installs them into a virtual
//! environment and sets `LEAKWATCH_DEPLOY_TOOLS` to its `bin`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn tool(bin: &Path, name: &str, args: &[&str]) {
    let out = Command::new(bin.join(name))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    assert!(
        out.status.success(),
        "{name} {args:?} refused it:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn compose_manifests_and_dockerfile_pass_their_validators() {
    let Some(bin) = crate::support::required_env("LEAKWATCH_DEPLOY_TOOLS") else {
        return;
    };
    let bin = PathBuf::from(bin);
    tool(
        &bin,
        "check-jsonschema",
        &[
            "--builtin-schema",
            "vendor.compose-spec",
            "deploy/compose.yaml",
        ],
    );
    let mut manifests: Vec<String> = std::fs::read_dir(repo().join("deploy/k8s"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| format!("deploy/k8s/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    manifests.sort();
    assert!(manifests.len() >= 4, "{manifests:?}");
    let mut args = vec!["--strict"];
    args.extend(manifests.iter().map(String::as_str));
    tool(&bin, "kubernetes-validate", &args);
    tool(&bin, "hadolint", &["deploy/Dockerfile"]);
}

/// A leakwatch process the deployment files start: where it is declared, its command
/// line after the image's entrypoint, and its environment (a literal value where the
/// file gives one; `None` for a Secret's).
#[derive(Debug)]
struct Launch {
    place: String,
    args: Vec<String>,
    env: Vec<(String, Option<String>)>,
}

fn yaml_str(y: &yaml_rust2::Yaml) -> Option<String> {
    use yaml_rust2::Yaml;
    match y {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Real(r) => Some(r.clone()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn yaml_list(y: &yaml_rust2::Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| v.iter().filter_map(yaml_str).collect())
        .unwrap_or_default()
}

/// A compose `environment:` mapping, with `<<:` merges (the anchors are resolved by
/// the parser, the merge key is not).
fn compose_env(y: &yaml_rust2::Yaml, out: &mut Vec<(String, Option<String>)>) {
    let Some(h) = y.as_hash() else { return };
    for (k, v) in h {
        let k = yaml_str(k).unwrap_or_default();
        if k == "<<" {
            compose_env(v, out);
        } else {
            out.retain(|(n, _)| n != &k);
            out.push((k, yaml_str(v).map(|v| interpolate(&v))));
        }
    }
}

/// Every leakwatch process of the compose file and the Kubernetes manifests.
fn launches() -> Vec<Launch> {
    use yaml_rust2::YamlLoader;
    let mut out = Vec::new();
    let compose = YamlLoader::load_from_str(&read("deploy/compose.yaml")).unwrap();
    let services = compose[0]["services"].as_hash().expect("services");
    for (name, svc) in services {
        let image = yaml_str(&svc["image"]).unwrap_or_default();
        if !image.starts_with("leakwatch:") {
            continue;
        }
        let mut env = Vec::new();
        compose_env(&svc["environment"], &mut env);
        out.push(Launch {
            place: format!("compose.yaml service {}", yaml_str(name).unwrap()),
            args: yaml_list(&svc["command"]),
            env,
        });
    }
    for entry in std::fs::read_dir(repo().join("deploy/k8s")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in YamlLoader::load_from_str(&text).unwrap() {
            let pod = &doc["spec"]["template"]["spec"];
            let Some(containers) = pod["containers"].as_vec() else {
                continue;
            };
            for c in containers {
                if !yaml_str(&c["image"])
                    .unwrap_or_default()
                    .contains("leakwatch")
                {
                    continue;
                }
                assert!(
                    c["command"].is_badvalue(),
                    "{path:?}: the image's entrypoint is leakwatch"
                );
                let env = c["env"]
                    .as_vec()
                    .map(|v| {
                        v.iter()
                            .map(|e| (yaml_str(&e["name"]).unwrap(), yaml_str(&e["value"])))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Launch {
                    place: format!(
                        "{} {}",
                        path.file_name().unwrap().to_string_lossy(),
                        yaml_str(&doc["metadata"]["name"]).unwrap_or_default()
                    ),
                    args: yaml_list(&c["args"]),
                    env,
                });
            }
        }
    }
    out
}

/// Replaces compose's `${VAR...}` with a placeholder.
fn interpolate(v: &str) -> String {
    let mut s = v.to_owned();
    while let Some(a) = s.find("${") {
        let b = s[a..].find('}').map(|b| a + b).expect("closed ${");
        s.replace_range(a..=b, "x");
    }
    s
}

/// The subcommand of a command line (after the global `--config FILE`).
fn subcommand(args: &[String]) -> (String, Vec<String>) {
    let mut rest = args.to_vec();
    while rest.first().is_some_and(|a| a == "--config") {
        rest.drain(..2);
    }
    assert!(!rest.is_empty(), "no subcommand in {args:?}");
    let sub = rest.remove(0);
    (sub, rest)
}

/// What `leakwatch {sub} --help` lists: its `--flags` and the environment variables
/// it reads (`[env: NAME=...]`, or named in its text, as `sim`'s password is).
fn help_of(sub: &str) -> (Vec<String>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_leakwatch"))
        .args([sub, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "leakwatch {sub} --help");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let flags = text
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[' || c == '<')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_owned)
        .collect();
    (flags, text)
}

#[test]
fn every_setting_the_deployment_files_make_is_one_leakwatch_reads() {
    let launches = launches();
    let subs: Vec<String> = launches.iter().map(|l| subcommand(&l.args).0).collect();
    for must in ["run", "bridge", "worker", "broker-config", "sim"] {
        assert!(
            subs.iter().any(|s| s == must),
            "no `{must}` in {launches:#?}"
        );
    }
    let dir = std::env::temp_dir().join(crate::support::unique("lw-deploy-"));
    std::fs::create_dir_all(&dir).unwrap();
    // The ConfigMap's file is a valid configuration.
    let cm = read("deploy/k8s/config.yaml");
    let toml: String = cm
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("leakwatch.toml: |"))
        .skip(1)
        .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
        .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
        .collect();
    assert!(toml.contains("[mqtt]"), "{toml}");
    let file = dir.join("leakwatch.toml");
    std::fs::write(&file, &toml).unwrap();

    let mut config_keys: Vec<(String, Option<String>)> = Vec::new();
    let mut helps = std::collections::HashMap::new();
    for l in &launches {
        let (sub, rest) = subcommand(&l.args);
        let (flags, help) = helps.entry(sub.clone()).or_insert_with(|| help_of(&sub));
        for a in rest.iter().filter(|a| a.starts_with("--")) {
            let flag = a.split('=').next().unwrap();
            assert!(
                flags.iter().any(|f| f == flag),
                "{}: `leakwatch {sub}` has no {flag}",
                l.place
            );
        }
        for (name, value) in &l.env {
            if name.starts_with("LEAKWATCH__") {
                config_keys.push((name.clone(), value.clone()));
            } else if name.starts_with("LEAKWATCH_") {
                assert!(
                    help.contains(&format!("[env: {name}=")) || help.contains(name.as_str()),
                    "{}: `leakwatch {sub}` does not read {name}",
                    l.place
                );
            }
        }
        if sub == "worker" {
            // The lease owner must differ per replica: an explicit id, or the host
            // name (a pod's or a container's name) the worker falls back to.
            let explicit = rest.iter().any(|a| a.starts_with("--id"))
                || l.env.iter().any(|(n, _)| n == "LEAKWATCH_WORKER_ID");
            assert!(explicit || help.contains("HOSTNAME"), "{}", l.place);
        }
    }
    assert!(config_keys.len() >= 4, "{config_keys:?}");

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leakwatch"));
    cmd.arg("--config").arg(&file).arg("config");
    for (k, v) in &config_keys {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "leakwatch refuses the deployment's settings {config_keys:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let effective: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (k, _) in &config_keys {
        let path: Vec<String> = k
            .trim_start_matches("LEAKWATCH__")
            .split("__")
            .map(str::to_lowercase)
            .collect();
        let mut v = &effective;
        for p in &path {
            v = v
                .get(p)
                .unwrap_or_else(|| panic!("{k} is not a leakwatch setting ({p} missing)"));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Metric names (`leakwatch_...`) in a text, without the exporter's suffixes.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("leakwatch_") {
        let start = i + at;
        let before_ok =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &text[start..end];
        if before_ok && name.len() > "leakwatch_".len() {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.push(base.to_owned());
        }
        i = end.max(start + 1);
    }
    names.sort();
    names.dedup();
    names
}

/// Every metric name the code registers (`counter!("...")` and the like).
fn exported_metrics() -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![repo().join("crates")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for mac in ["counter!(", "gauge!(", "histogram!("] {
                    for (at, _) in text.match_indices(mac) {
                        let rest = text[at + mac.len()..].trim_start();
                        if let Some(rest) = rest.strip_prefix('"')
                            && let Some(end) = rest.find('"')
                        {
                            out.push(rest[..end].to_owned());
                        }
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn the_alerting_rules_and_the_dashboard_use_metrics_leakwatch_exports() {
    let exported = exported_metrics();
    assert!(exported.len() > 10, "{exported:?}");
    for file in [
        "deploy/prometheus/leakwatch-rules.yaml",
        "deploy/grafana/leakwatch-dashboard.json",
    ] {
        let used = metric_names(&read(file));
        assert!(!used.is_empty(), "{file} names no metric");
        for m in used {
            assert!(
                exported.contains(&m),
                "{file} uses {m}, which leakwatch does not export"
            );
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/leakwatch-dashboard.json")).unwrap();
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() >= 8));
}

/// The nats-server binary, when installed; in CI its absence fails the test.
fn nats_server() -> Option<PathBuf> {
    let found = [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists());
    if found.is_none() && std::env::var_os("CI").is_some() {
        panic!("nats-server is not installed (.ci/run installs it)");
    }
    found
}

/// The scaled-out shape's nats-server configuration (the compose file's and the
/// Kubernetes ConfigMap's) passes `nats-server -t` (which refuses unknown keys and
/// loads the certificates) with test certificates where the deployment mounts its own.
#[test]
fn the_nats_configurations_pass_nats_server_t() {
    let Some(bin) = nats_server() else {
        return;
    };
    let dir = std::env::temp_dir().join(crate::support::unique("lw-nats-conf-"));
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let pki = crate::devices::Pki::new(&tls);
    let (cert, key) = pki.issue("nats", &["nats-1", "nats-2", "nats-3", "localhost"]);
    std::fs::rename(cert, tls.join("server.pem")).unwrap();
    std::fs::rename(key, tls.join("server.key")).unwrap();
    let cm = read("deploy/k8s/nats.yaml");
    let from_k8s: String = cm
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("nats-server.conf: |"))
        .skip(1)
        .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
        .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
        .collect();
    assert!(from_k8s.contains("jetstream"), "{from_k8s}");
    for (name, text) in [
        ("compose", read("deploy/nats/nats-server.conf")),
        ("k8s", from_k8s),
    ] {
        assert!(
            text.contains("/etc/nats/tls/server.pem"),
            "{name}: TLS is configured"
        );
        let conf = dir.join(format!("{name}.conf"));
        std::fs::write(
            &conf,
            text.replace("/etc/nats/tls", &tls.to_string_lossy())
                .replace("/data/jetstream", &dir.join("js").to_string_lossy()),
        )
        .unwrap();
        let out = Command::new(&bin)
            .arg("-t")
            .arg("-c")
            .arg(&conf)
            .args(["--name", "nats-1"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nats-server -t refuses the {name} configuration: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
