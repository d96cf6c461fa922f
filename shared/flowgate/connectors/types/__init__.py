"""Connector types, one module each; `flowgate.connectors.registry` names them."""
