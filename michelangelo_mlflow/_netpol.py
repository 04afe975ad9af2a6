"""The platform guide's egress NetworkPolicy for task pods, validated as Kubernetes does.

:func:`network_policy` builds the manifest ``michelangelo-mlflow netpol`` prints: DNS,
the tracking server and, when given, the artifact store. Every name, namespace and
label is checked with the rules the Kubernetes API server applies, so the YAML never
fails at ``kubectl apply``; a policy without a pod selector is refused, because it
would restrict the egress of every pod in the namespace.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any

from michelangelo_mlflow.exceptions import ConfigurationError

__all__ = ["network_policy", "parse_block", "parse_selector"]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_SHOW_LABELS = "kubectl get pods -n <namespace> --show-labels"


def network_policy(
    namespace: str,
    server: tuple[str, int],
    labels: Mapping[str, str],
    *,
    name: str = "allow-mlflow-egress",
    artifact_stores: Sequence[tuple[str, int]] = (),
) -> dict[str, Any]:
    """The egress NetworkPolicy of the platform guide's Step 1, as a manifest dict.

    Args:
        namespace: The compute cluster namespace (a DNS-1123 label).
        server: The tracking server's address block and TCP port.
        labels: The task pods' labels (at least one).
        name: The policy's name (a DNS-1123 subdomain).
        artifact_stores: Address blocks and ports of the artifact store, also allowed.

    Returns:
        The manifest, ready for ``yaml.safe_dump``.

    Raises:
        ConfigurationError: A name, namespace or label Kubernetes would reject, or no
            label at all.

    Example:
        >>> network_policy("ml", ("10.0.0.5/32", 5000), {"app": "train"})["spec"]["policyTypes"]
        ['Egress']
    """
    _check(namespace, _DNS_LABEL, 63, "--namespace", "a DNS-1123 label (lowercase letters, "
           "digits and '-', starting and ending with a letter or digit)")  # fmt: skip
    _check(name, _DNS_SUBDOMAIN, 253, "--name", "a DNS-1123 subdomain (lowercase letters, digits, "
           "'-' and '.')")  # fmt: skip
    if not labels:
        raise ConfigurationError(
            "no --selector: a NetworkPolicy with an empty podSelector restricts the egress of "
            "every pod in the namespace (to DNS and the tracking server only)",
            variable="--selector",
            fix=f"pass the task pods' labels, such as --selector app=training (see {_SHOW_LABELS})",
        )
    egress: list[dict[str, Any]] = [
        {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
    ]
    for cidr, port in (server, *artifact_stores):
        egress.append(
            {"to": [{"ipBlock": {"cidr": cidr}}], "ports": [{"protocol": "TCP", "port": port}]}
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": dict(labels)},
            "policyTypes": ["Egress"],
            "egress": egress,
        },
    }


def parse_selector(selector: str) -> tuple[str, str]:
    """``KEY=VALUE`` as a Kubernetes label, checked.

    Raises:
        ConfigurationError: Not ``KEY=VALUE``, or a key or value Kubernetes rejects.

    Example:
        >>> parse_selector("app.kubernetes.io/name=train")
        ('app.kubernetes.io/name', 'train')
    """
    key, sep, value = selector.partition("=")
    if not sep or not key:
        raise ConfigurationError(
            f"--selector {selector!r} is not KEY=VALUE",
            variable="--selector",
            fix=f"write it as KEY=VALUE, such as app=training (see {_SHOW_LABELS})",
        )
    prefix, slash, label = key.rpartition("/")
    if slash:
        _check(prefix, _DNS_SUBDOMAIN, 253, "--selector", "a label key prefix that is a DNS "
               "subdomain (such as app.kubernetes.io/)")  # fmt: skip
    _check(label, _LABEL_NAME, 63, "--selector", "a label name of at most 63 letters, digits, "
           "'-', '_' and '.', starting and ending with a letter or digit")  # fmt: skip
    _check(value, _LABEL_VALUE, 63, "--selector", "a label value of at most 63 letters, digits, "
           "'-', '_' and '.', starting and ending with a letter or digit")  # fmt: skip
    return key, value


def parse_block(value: str, *, default_port: int, option: str) -> tuple[str, int]:
    """``CIDR`` or ``CIDR:PORT`` (a bare IP means /32), checked.

    Raises:
        ConfigurationError: Not an address block, or a port outside 1-65535.

    Example:
        >>> parse_block("10.0.0.5", default_port=443, option="--artifact-store")
        ('10.0.0.5/32', 443)
    """
    address, port = value, default_port
    head, sep, tail = value.rpartition(":")
    if sep and tail.isdigit() and "." in head:  # 10.0.0.0/8:443 (not an IPv6 colon)
        address, port = head, int(tail)
    try:
        network = ipaddress.ip_network(address, strict=False)
    except ValueError:
        raise ConfigurationError(
            f"{option} {value!r} is not an IP address or CIDR block",
            variable=option,
            fix="pass an address block such as 10.0.0.5/32 (a bare IP means /32), optionally "
            "with :PORT",
        ) from None
    if not 1 <= port <= 65535:
        raise ConfigurationError(
            f"{option} {value!r} has port {port}, outside 1-65535",
            variable=option,
            fix="use a TCP port between 1 and 65535",
        )
    return str(network), port


def _check(value: str, pattern: re.Pattern[str], limit: int, option: str, rule: str) -> None:
    if len(value) > limit or not pattern.match(value):
        raise ConfigurationError(
            f"{option} {value!r} would be rejected by Kubernetes: it must be {rule}, at most "
            f"{limit} characters",
            variable=option,
            fix=f"pass a valid {option}"
            + (f" (see {_SHOW_LABELS})" if option == "--selector" else ""),
        )
