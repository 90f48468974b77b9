// SPDX-License-Identifier: Apache-2.0
// Written by hack/gen-types.sh from api/dataplaneconfig.yaml: edit that file and run it.
// The schema of one entry of a DataplaneConfig's spec.listeners, which the chart's CRD
// leaves to blixt to check (capabilities/dataplaneconfig-check.ts).
export const LISTENER_SCHEMA = {
  "type": "object",
  "required": [
    "name",
    "port",
    "protocol",
    "rejectWeight",
    "backends"
  ],
  "properties": {
    "name": {
      "description": "The Gateway listener's name (for status, metrics and logs).",
      "type": "string",
      "minLength": 1,
      "maxLength": 253
    },
    "port": {
      "description": "Destination port on address.",
      "type": "integer",
      "minimum": 1,
      "maximum": 65535
    },
    "protocol": {
      "description": "Transport protocol the dataplane matches. HTTP and HTTPS listeners\nare carried as TCP.",
      "type": "string",
      "enum": [
        "TCP",
        "UDP"
      ]
    },
    "tls": {
      "description": "Present for an HTTPS listener (TLS mode Terminate): the agent\nterminates TLS with these certificates (kubernetes.io/tls Secrets)\nand forwards the plaintext to backends.",
      "type": "object",
      "required": [
        "certificateRefs"
      ],
      "properties": {
        "certificateRefs": {
          "type": "array",
          "maxItems": 64,
          "items": {
            "type": "object",
            "required": [
              "namespace",
              "name"
            ],
            "properties": {
              "namespace": {
                "type": "string"
              },
              "name": {
                "type": "string"
              }
            },
            "additionalProperties": false
          }
        }
      },
      "additionalProperties": false
    },
    "route": {
      "description": "The route whose backends this listener carries (the oldest attached route).",
      "type": "object",
      "required": [
        "kind",
        "namespace",
        "name"
      ],
      "properties": {
        "kind": {
          "type": "string",
          "enum": [
            "TCPRoute",
            "UDPRoute",
            "HTTPRoute"
          ]
        },
        "namespace": {
          "type": "string"
        },
        "name": {
          "type": "string"
        }
      },
      "additionalProperties": false
    },
    "rejectWeight": {
      "description": "Weight, on the same scale as backends[].weight, of connections to\nrefuse (TCP RST, UDP drop): the weight of backendRefs that are\ninvalid or have no ready endpoint. With no backends, everything is\nrefused whatever this value is.",
      "type": "integer",
      "format": "int64",
      "minimum": 0
    },
    "backends": {
      "description": "One entry per valid backendRef that has ready endpoints. Its weight\nis split evenly over its endpoints.",
      "type": "array",
      "maxItems": 1024,
      "items": {
        "type": "object",
        "required": [
          "weight",
          "endpoints"
        ],
        "properties": {
          "name": {
            "description": "\"namespace/name:port\" of the Service the backendRef names.",
            "type": "string"
          },
          "weight": {
            "type": "integer",
            "format": "int64",
            "minimum": 1
          },
          "endpoints": {
            "description": "Ready endpoints, sorted by address then port.",
            "type": "array",
            "minItems": 1,
            "maxItems": 65536,
            "items": {
              "type": "object",
              "required": [
                "address",
                "port"
              ],
              "properties": {
                "address": {
                  "type": "string",
                  "maxLength": 45
                },
                "port": {
                  "type": "integer",
                  "minimum": 1,
                  "maximum": 65535
                },
                "nodeName": {
                  "description": "The node the endpoint runs on (the EndpointSlice's\nendpoints[].nodeName); absent when the slice does not\nsay. An agent forwards to an endpoint on its own node, or\nwithout nodeName, directly; to one on another node whose\nagent has an entry in status.nodes, encapsulated (IP-in-IP)\nfor that node's programs to deliver; and refuses the share\nof one on a node with no such entry.",
                  "type": "string",
                  "maxLength": 253
                }
              },
              "additionalProperties": false
            }
          }
        },
        "additionalProperties": false
      }
    }
  },
  "additionalProperties": false
} as const;
