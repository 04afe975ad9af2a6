"""The platform guide's egress NetworkPolicy for task pods, validated as Kubernetes does.

:func:`network_policy` builds the manifest ``michelangelo-mlflow netpol`` prints: DNS,
the tracking server and, when given, the artifact store. Every name, namespace and
label is checked with the rules the Kubernetes API server applies, so the YAML never
fails at ``kubectl apply``; a policy without a pod selector is refused, because it
would restrict the egress of every pod in the namespace.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from michelangelo_mlflow._registry._names import (
    is_dns_label,
    is_label_value,
    is_qualified_name,
    is_subdomain,
)
from michelangelo_mlflow.exceptions import ConfigurationError

__all__ = ["network_policy", "parse_block", "parse_selector"]

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
    _check(namespace, is_dns_label, "--namespace", "a DNS-1123 label (lowercase letters, "
           "digits and '-', starting and ending with a letter or digit), at most 63 "
           "characters")  # fmt: skip
    _check(name, is_subdomain, "--name", "a DNS-1123 subdomain (lowercase letters, digits, "
           "'-' and '.'), at most 253 characters")  # fmt: skip
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
    _check(key, is_qualified_name, "--selector", "a label key: an optional DNS subdomain prefix "
           "and '/', then a label name of at most 63 letters, digits, '-', '_' and '.', "
           "starting and ending with a letter or digit")  # fmt: skip
    _check(value, is_label_value, "--selector", "a label value of at most 63 letters, digits, "
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


def _check(value: str, valid: Callable[[str], bool], option: str, rule: str) -> None:
    if not valid(value):
        raise ConfigurationError(
            f"{option} {value!r} would be rejected by Kubernetes: it must be {rule}",
            variable=option,
            fix=f"pass a valid {option}"
            + (f" (see {_SHOW_LABELS})" if option == "--selector" else ""),
        )
