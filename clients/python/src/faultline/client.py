"""The Kubernetes client: :class:`Faultline` writes, lists and removes the
``faultline.dev/faults`` annotation and reads what the proxies run, like
``kubectl fault``."""

from __future__ import annotations

import importlib
import json
import os
import re
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from .errors import ApiError, FaultlineError, InvalidPolicy, InvalidTarget, NotApplied, NotFound, NotOptedIn
from .fault import Fault, FaultStatus, PodStatus, parse_metrics
from .rules import DurationLike, as_rules, document_from_rules, from_yaml, policy, to_yaml
from .targets import Target, TargetLike, classify
from .versions import policy_version, text_version

FAULTS_ANNOTATION = "faultline.dev/faults"
SEEN_AT_ANNOTATION = "faultline.dev/faults-seen-at"
INJECTED_LABEL = "faultline.dev/injected"
NAMESPACE_LABEL = "faultline.dev/injection"
#: The proxy's admin port, read through the API server's pod proxy subresource.
ADMIN_PORT = 15400
#: Kinds a label selector target selects (bare ReplicaSets and Pods too: those without a controller).
SELECTOR_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet", "Pod")
_OWNER_KINDS = {
    ("apps", "ReplicaSet"): "ReplicaSet",
    ("apps", "Deployment"): "Deployment",
    ("apps", "StatefulSet"): "StatefulSet",
    ("apps", "DaemonSet"): "DaemonSet",
    ("batch", "Job"): "Job",
    ("", "Pod"): "Pod",
}
_DENIAL = re.compile(r"denied the request: (?:invalid faultline\.dev/faults annotation in [\w.]+: )?(.*)", re.S)

ObjKey = Tuple[str, str]  # (kind, name) within one namespace


def _load_yaml(text: str) -> Any:
    try:
        return from_yaml(text)
    except yaml.YAMLError:
        return None


def _owner(meta: Any) -> Optional[ObjKey]:
    """The controlling owner among the kinds faultline follows."""
    for ref in meta.owner_references or []:
        if not ref.controller:
            continue
        group = ref.api_version.split("/")[0] if "/" in ref.api_version else ""
        kind = _OWNER_KINDS.get((group, ref.kind))
        if kind is not None:
            return (kind, ref.name)
    return None


def _annotation(meta: Any, key: str = FAULTS_ANNOTATION) -> Optional[str]:
    value = (meta.annotations or {}).get(key)
    return value if isinstance(value, str) else None


def _is_copy(kind: str, meta: Any) -> bool:
    """A Deployment's ReplicaSet carries a stale copy of the Deployment's annotations."""
    owner = _owner(meta)
    return kind == "ReplicaSet" and owner is not None and owner[0] == "Deployment"


class Faultline:
    """Inject and recover faults on Kubernetes workloads, as ``kubectl fault`` does.

    ``kubeconfig`` (default ``$KUBECONFIG``, then ``~/.kube/config``, then the
    in-cluster service account) and ``context`` choose the cluster;
    ``namespace`` overrides the context's namespace as the default for every
    call. ``api_client`` (a ``kubernetes.client.ApiClient``) bypasses all of
    that.

    Needs RBAC: get/list/patch on the workloads, list pods, get namespaces
    (for the opt-in check) and get ``pods/proxy`` (for status).
    """

    def __init__(
        self,
        kubeconfig: Optional[str] = None,
        context: Optional[str] = None,
        *,
        namespace: Optional[str] = None,
        api_client: Any = None,
    ) -> None:
        # Imported here so that importing faultline stays cheap; typed as Any
        # because the kubernetes package's annotations are partial.
        k8s: Any = importlib.import_module("kubernetes.client")
        k8s_config: Any = importlib.import_module("kubernetes.config")

        default_ns = "default"
        if api_client is None:
            cfg = k8s.Configuration()
            config_file = kubeconfig or os.environ.get("KUBECONFIG") or None
            try:
                k8s_config.load_kube_config(config_file=config_file, context=context, client_configuration=cfg)
                try:
                    contexts, active = k8s_config.list_kube_config_contexts(config_file)
                    chosen = next((c for c in contexts if c["name"] == context), active) if context else active
                    default_ns = (chosen or {}).get("context", {}).get("namespace") or "default"
                except Exception:  # the namespace is a nicety; the config loaded
                    pass
            except k8s_config.ConfigException:
                if kubeconfig or context:
                    raise
                k8s_config.load_incluster_config(client_configuration=cfg)
                try:
                    with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
                        default_ns = f.read().strip() or "default"
                except OSError:
                    pass
            api_client = k8s.ApiClient(cfg)
        self.api_client = api_client
        self.namespace: str = namespace or default_ns
        self._core: Any = k8s.CoreV1Api(api_client)
        self._apps: Any = k8s.AppsV1Api(api_client)
        self._batch: Any = k8s.BatchV1Api(api_client)

    # ---- Kubernetes plumbing -------------------------------------------------

    def _ns(self, namespace: Optional[str]) -> str:
        return namespace or self.namespace

    def _call(self, action: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(*args, **kwargs)
        except ApiException as e:
            raise _api_error(action, e) from None

    def _ops(self, kind: str) -> Tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
        """(read, patch, list in namespace, list everywhere) for ``kind``."""
        a, b, c = self._apps, self._batch, self._core
        table: Dict[str, Tuple[Callable[..., Any], ...]] = {
            "Deployment": (a.read_namespaced_deployment, a.patch_namespaced_deployment,
                           a.list_namespaced_deployment, a.list_deployment_for_all_namespaces),
            "StatefulSet": (a.read_namespaced_stateful_set, a.patch_namespaced_stateful_set,
                            a.list_namespaced_stateful_set, a.list_stateful_set_for_all_namespaces),
            "DaemonSet": (a.read_namespaced_daemon_set, a.patch_namespaced_daemon_set,
                          a.list_namespaced_daemon_set, a.list_daemon_set_for_all_namespaces),
            "ReplicaSet": (a.read_namespaced_replica_set, a.patch_namespaced_replica_set,
                           a.list_namespaced_replica_set, a.list_replica_set_for_all_namespaces),
            "Job": (b.read_namespaced_job, b.patch_namespaced_job,
                    b.list_namespaced_job, b.list_job_for_all_namespaces),
            "Pod": (c.read_namespaced_pod, c.patch_namespaced_pod,
                    c.list_namespaced_pod, c.list_pod_for_all_namespaces),
        }
        read, patch, list_ns, list_all = table[kind]
        return read, patch, list_ns, list_all

    def _read(self, target: Target, namespace: str) -> Any:
        from kubernetes.client.exceptions import ApiException

        read = self._ops(target.kind)[0]
        try:
            return read(target.name, namespace)
        except ApiException as e:
            if e.status == 404:
                raise NotFound(f"{target.kind} {namespace}/{target.name} not found") from None
            raise _api_error(f"read {target.kind} {namespace}/{target.name}", e) from None

    def _patch(self, target: Target, namespace: str, annotations: Mapping[str, Optional[str]],
               dry_run: bool = False) -> None:
        from kubernetes.client.exceptions import ApiException

        patch = self._ops(target.kind)[1]
        body = {"metadata": {"annotations": dict(annotations)}}
        kwargs: Dict[str, Any] = {"dry_run": "All"} if dry_run else {}
        try:
            patch(target.name, namespace, body, **kwargs)
        except ApiException as e:
            if e.status == 404:
                raise NotFound(f"{target.kind} {namespace}/{target.name} not found") from None
            message = _message(e)
            denial = _DENIAL.search(message)
            if denial and ("faultline.dev/faults" in message or "faultline" in message):
                raise InvalidPolicy(denial.group(1).strip(), message) from None
            raise _api_error(f"update {target.kind} {namespace}/{target.name}", e) from None

    def _list(self, kind: str, namespace: Optional[str], label_selector: Optional[str] = None) -> List[Any]:
        _, _, list_ns, list_all = self._ops(kind)
        kwargs: Dict[str, Any] = {"label_selector": label_selector} if label_selector else {}
        where = f"in {namespace}" if namespace else "in every namespace"
        if namespace:
            result = self._call(f"list {kind}s {where}", list_ns, namespace, **kwargs)
        else:
            result = self._call(f"list {kind}s {where}", list_all, **kwargs)
        return list(result.items or [])

    def _targets(self, target: TargetLike, namespace: str) -> Tuple[Target, ...]:
        one, selector = classify(target)
        if one is not None:
            return (one,)
        assert selector is not None
        found: List[Target] = []
        for kind in SELECTOR_KINDS:
            for obj in self._list(kind, namespace, selector):
                if kind in ("ReplicaSet", "Pod") and _owner(obj.metadata) is not None:
                    continue  # managed: its owner is the workload
                found.append(Target(kind, obj.metadata.name))
        if not found:
            raise NotFound(f"no workload in namespace {namespace} matches the label selector {selector}")
        return tuple(found)

    def check_opted_in(self, namespace: Optional[str] = None) -> None:
        """Raise :class:`NotOptedIn` unless the namespace is labelled ``faultline.dev/injection=enabled``.

        Without permission to read namespaces the check is skipped.
        """
        from kubernetes.client.exceptions import ApiException

        ns = self._ns(namespace)
        try:
            obj = self._core.read_namespace(ns)
        except ApiException as e:
            if e.status == 404:
                raise NotFound(f"Namespace {ns} not found") from None
            if e.status == 403:
                return
            raise _api_error(f"read namespace {ns}", e) from None
        if (obj.metadata.labels or {}).get(NAMESPACE_LABEL) != "enabled":
            raise NotOptedIn(ns)

    # ---- The contract --------------------------------------------------------

    def validate(
        self,
        target: TargetLike,
        rules: Union[Mapping[str, Any], Sequence[Mapping[str, Any]], None] = None,
        *,
        namespace: Optional[str] = None,
        duration: Optional[DurationLike] = None,
        until: Optional[Any] = None,
        text: Optional[str] = None,
    ) -> str:
        """Check a policy with faultline's own validation, writing nothing; return its text.

        The API server is asked for a server-side dry run of the annotation
        patch on the target, so faultline's validating webhook judges it:
        :class:`InvalidPolicy` carries its message (rule and field). As the
        webhook is installed with ``failurePolicy: Ignore``, a policy is only
        checked while the webhook is up.
        """
        ns = self._ns(namespace)
        text = text if text is not None else to_yaml(policy(as_rules(rules or []), duration=duration, until=until))
        targets = self._targets(target, ns)
        self._patch(targets[0], ns, {FAULTS_ANNOTATION: text, SEEN_AT_ANNOTATION: None}, dry_run=True)
        return text

    def inject(
        self,
        target: Optional[TargetLike] = None,
        rules: Union[Mapping[str, Any], Sequence[Mapping[str, Any]], None] = None,
        *,
        namespace: Optional[str] = None,
        duration: Optional[DurationLike] = None,
        until: Optional[Any] = None,
        text: Optional[str] = None,
        check_opted_in: bool = True,
    ) -> Fault:
        """Write a fault policy on ``target`` (replacing any previous one); return the :class:`Fault`.

        ``target`` is ``"deploy/checkout"`` (``sts/``, ``ds/``, ``job/``,
        ``rs/``, ``pod/``, long kind names too) or a label selector over
        workloads (``"app=checkout"`` or ``{"app": "checkout"}``: every
        Deployment, StatefulSet, DaemonSet, Job, bare ReplicaSet and bare Pod
        with those labels). ``rules`` are rule mappings (see
        :mod:`faultline.rules`); ``duration`` / ``until`` make the controller
        remove the policy then. ``text`` writes a whole YAML document as is
        instead.

        The policy is validated first by a server-side dry run
        (:class:`InvalidPolicy` with the webhook's message), and refused in a
        namespace that is not opted in (:class:`NotOptedIn`), whose pods have
        no proxy. The controller pushes it to the proxies within a second:
        :meth:`wait_applied` waits for that.
        """
        if target is None:
            raise InvalidTarget("a target is needed in a cluster, e.g. 'deploy/checkout'")
        if text is None:
            document, text = document_from_rules(rules, duration=duration, until=until)
        else:
            document = _load_yaml(text)
        ns = self._ns(namespace)
        targets = self._targets(target, ns)
        for t in targets:
            self._read(t, ns)
        self._patch(targets[0], ns, {FAULTS_ANNOTATION: text, SEEN_AT_ANNOTATION: None}, dry_run=True)
        if check_opted_in:
            self.check_opted_in(ns)
        for t in targets:
            self._patch(t, ns, {FAULTS_ANNOTATION: text, SEEN_AT_ANNOTATION: None})
        return Fault(namespace=ns, targets=targets, text=text, document=document,
                     version=text_version(text), injector=self)

    #: ``with fl.fault("deploy/x", rules=[...]):`` reads well; same as :meth:`inject`.
    fault = inject

    def recover(self, fault: Union[Fault, TargetLike], *, namespace: Optional[str] = None) -> None:
        """Remove the fault policy (and the controller's seen-at record) from the fault's workloads.

        Takes a :class:`Fault` or a target. Workloads that have no policy (it
        expired, or was recovered already) or no longer exist are fine:
        recovering is idempotent.
        """
        if isinstance(fault, Fault):
            ns = fault.namespace or self._ns(namespace)
            targets: Iterable[Target] = fault.targets
        else:
            ns = self._ns(namespace)
            targets = self._targets(fault, ns)
        for t in targets:
            try:
                obj = self._read(t, ns)
            except NotFound:
                continue
            annotations = obj.metadata.annotations or {}
            if FAULTS_ANNOTATION not in annotations and SEEN_AT_ANNOTATION not in annotations:
                continue
            try:
                self._patch(t, ns, {FAULTS_ANNOTATION: None, SEEN_AT_ANNOTATION: None})
            except NotFound:
                continue

    def list_faults(self, namespace: Optional[str] = None) -> List[Fault]:
        """Every workload (and pod) carrying a fault policy, in ``namespace`` or, by default, every namespace.

        Deployment-owned ReplicaSets are left out: their annotation is a stale
        copy the Deployment controller makes. Each :class:`Fault` can be
        passed to :meth:`recover`.
        """
        out: List[Fault] = []
        for kind in SELECTOR_KINDS:
            for obj in self._list(kind, namespace):
                text = _annotation(obj.metadata)
                if text is None or _is_copy(kind, obj.metadata):
                    continue
                out.append(Fault(namespace=obj.metadata.namespace, targets=(Target(kind, obj.metadata.name),),
                                 text=text, document=_load_yaml(text), version=text_version(text),
                                 injector=self))
        out.sort(key=lambda f: (f.namespace or "", f.targets))
        return out

    def proxy_get(self, namespace: str, pod: str, path: str, timeout: float = 3.0) -> Optional[str]:
        """GET ``path`` on a pod's proxy admin port (15400) through the API server's
        pod proxy subresource; ``None`` when it cannot be reached."""
        try:
            response = self._core.connect_get_namespaced_pod_proxy_with_path(
                f"{pod}:{ADMIN_PORT}", namespace, path.lstrip("/"),
                _preload_content=False, _request_timeout=timeout)
            data = response.data
            return data.decode("utf-8") if isinstance(data, bytes) else str(data)
        except Exception:
            return None

    def _pod_report(self, pod: Any, expected: Optional[str], with_metrics: bool = True) -> PodStatus:
        meta, status = pod.metadata, pod.status
        injected = (meta.labels or {}).get(INJECTED_LABEL) == "true"
        report = PodStatus(
            name=meta.name, namespace=meta.namespace,
            phase=status.phase if status else None, ip=status.pod_ip if status else None,
            injected=injected, terminating=meta.deletion_timestamp is not None,
            expected_version=expected,
        )
        if not injected or report.phase != "Running":
            return report
        raw = self.proxy_get(meta.namespace, meta.name, "/policy")
        if raw is None:
            return report
        try:
            body = json.loads(raw)
        except ValueError:
            return report
        if not isinstance(body, dict):
            return report
        report.reachable = True
        report.policy = body
        report.version = body.get("version") if isinstance(body.get("version"), str) else None
        connected = body.get("connected")
        report.connected = connected if isinstance(connected, bool) else None
        if with_metrics:
            metrics = self.proxy_get(meta.namespace, meta.name, "/metrics")
            if metrics is not None:
                report.faults_by_rule = parse_metrics(metrics)
                report.faults_injected = sum(report.faults_by_rule.values())
        return report

    def _snapshot(self, namespace: str) -> Tuple[List[Any], Dict[ObjKey, Any]]:
        pods = self._list("Pod", namespace)
        owners: Dict[ObjKey, Any] = {}
        for kind in ("ReplicaSet", "Deployment", "StatefulSet", "DaemonSet", "Job"):
            for obj in self._list(kind, namespace):
                owners[(kind, obj.metadata.name)] = obj.metadata
        return pods, owners

    @staticmethod
    def _belongs(pod: Any, target: Target, owners: Mapping[ObjKey, Any]) -> bool:
        key: Optional[ObjKey] = ("Pod", pod.metadata.name)
        meta: Any = pod.metadata
        for _ in range(4):
            if key == (target.kind, target.name):
                return True
            key = _owner(meta) if meta is not None else None
            if key is None:
                return False
            meta = owners.get(key)
        return False

    @staticmethod
    def _governing_text(pod: Any, owners: Mapping[ObjKey, Any]) -> Tuple[bool, Optional[str]]:
        """The controller's resolution: ``(known, text)``; ``known`` is False when an owner is missing."""
        kind, meta = "Pod", pod.metadata
        for _ in range(4):
            text = _annotation(meta)
            if text is not None and not _is_copy(kind, meta):
                return True, text
            owner = _owner(meta)
            if owner is None:
                return True, None
            meta = owners.get(owner)
            if meta is None:
                return False, None
            kind = owner[0]
        return True, None

    def _expected(self, pod: Any, pods: Sequence[Any], owners: Mapping[ObjKey, Any]) -> Optional[str]:
        known, text = self._governing_text(pod, owners)
        if not known:
            return None
        if text is None:
            return policy_version(None)
        document = _load_yaml(text)
        if not isinstance(document, dict):
            return None  # does not parse: the controller keeps serving the last good policy
        return policy_version(text)

    def status(self, target: TargetLike, *, namespace: Optional[str] = None) -> FaultStatus:
        """The target's policy and, per live pod (terminating and finished pods are left
        out): injected, proxy reachable and connected to the controller, the version it
        runs, the version the controller serves it, faults so far.

        The same facts as ``kubectl fault status``; the proxy's are read from
        its admin port through the API server (``pods/proxy``).
        """
        ns = self._ns(namespace)
        targets = self._targets(target, ns)
        text = _annotation(self._read(targets[0], ns).metadata) if len(targets) == 1 else None
        pods, owners = self._snapshot(ns)
        result = FaultStatus(target=", ".join(str(t) for t in targets), namespace=ns, text=text,
                             version=text_version(text) if text is not None else None)
        for pod in pods:
            if not _live(pod) or not any(self._belongs(pod, t, owners) for t in targets):
                continue
            result.pods.append(self._pod_report(pod, self._expected(pod, pods, owners)))
        result.pods.sort(key=lambda p: p.name)
        return result

    def wait_applied(self, fault: Fault, timeout: float = 60.0, *, min_pods: int = 1,
                     interval: float = 0.5) -> FaultStatus:
        """Return once every targeted, running, injected pod's proxy runs ``fault``.

        A proxy runs the fault when it is connected to the controller and
        reports a version equal to the controller's hash of exactly this
        fault's annotation text with the peers the proxy reports (see
        :func:`faultline.versions.policy_version`): a pod whose policy comes
        from elsewhere (its own annotation, say) never counts. Terminating and
        finished pods are skipped; at least ``min_pods`` pods must be
        applied. Raises :class:`NotApplied` after ``timeout`` seconds, saying
        what each pod still lacks.
        """
        ns = fault.namespace or self.namespace
        deadline = time.monotonic() + timeout
        while True:
            pods, owners = self._snapshot(ns)
            status = FaultStatus(target=", ".join(str(t) for t in fault.targets), namespace=ns,
                                 text=fault.text, version=fault.version)
            pending: List[str] = []
            uninjected: List[str] = []
            applied = 0
            for pod in pods:
                if not any(self._belongs(pod, t, owners) for t in fault.targets):
                    continue
                meta = pod.metadata
                if not _live(pod):
                    continue
                injected = (meta.labels or {}).get(INJECTED_LABEL) == "true"
                if not injected:
                    uninjected.append(meta.name)
                    continue
                report = self._pod_report(pod, self._expected(pod, pods, owners), with_metrics=False)
                status.pods.append(report)
                why = _why_not_applied(report, fault.text)
                if why is None:
                    applied += 1
                else:
                    pending.append(f"{meta.name}: {why}")
            if not pending and applied >= min_pods:
                status.pods.sort(key=lambda p: p.name)
                return status
            if time.monotonic() >= deadline:
                if applied < min_pods and not pending:
                    pending.append(f"{applied} running injected pod(s), want at least {min_pods}")
                if uninjected:
                    pending.append(f"pods without a proxy (is namespace {ns} labelled "
                                   f"{NAMESPACE_LABEL}=enabled? restart them): {', '.join(sorted(uninjected))}")
                raise NotApplied(f"{fault} not applied after {timeout:g}s", pending)
            time.sleep(interval)


def _live(pod: Any) -> bool:
    """Not being deleted, not finished: the pods whose proxies matter."""
    phase = pod.status.phase if pod.status else None
    return pod.metadata.deletion_timestamp is None and phase not in ("Succeeded", "Failed")


def _why_not_applied(report: PodStatus, text: str) -> Optional[str]:
    """``None`` when the pod's proxy runs ``text``; else what is missing."""
    if report.phase != "Running":
        return f"phase {report.phase}"
    if not report.reachable:
        return "proxy unreachable (admin port 15400 through the pod proxy)"
    if report.connected is not True:
        return "proxy not connected to the controller"
    want = policy_version(text)
    if report.version != want:
        return f"runs version {report.version}, not {want}"
    return None


def _message(e: Any) -> str:
    body = getattr(e, "body", None)
    if body:
        try:
            parsed = json.loads(body)
            if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
                return str(parsed["message"])
        except (ValueError, TypeError):
            pass
        return body.decode() if isinstance(body, bytes) else str(body)
    return str(getattr(e, "reason", None) or e)


def _api_error(action: str, e: Any) -> FaultlineError:
    return ApiError(action, getattr(e, "status", None), _message(e))
