// Validates Knative and Istio objects against the schemas shipped by the npm packages
// @kubernetes-models/knative (serving.knative.dev Go types) and @kubernetes-models/istio
// (Istio 1.29 CRDs). Bundled by generate.sh into crd-validators.cjs, which needs only node.
// Input (stdin): a JSON array of objects. Output (stdout): one result per object, in order:
// {"kind", "known": whether a schema exists for its apiVersion/kind, "errors": [...]}.
import { readFileSync } from "node:fs";
import { Service } from "@kubernetes-models/knative/serving.knative.dev/v1/Service";
import { DomainMapping } from "@kubernetes-models/knative/serving.knative.dev/v1beta1/DomainMapping";
import { ClusterDomainClaim } from "@kubernetes-models/knative/networking.internal.knative.dev/v1alpha1/ClusterDomainClaim";
import { PeerAuthentication } from "@kubernetes-models/istio/security.istio.io/v1/PeerAuthentication";
import { AuthorizationPolicy } from "@kubernetes-models/istio/security.istio.io/v1/AuthorizationPolicy";
import { RequestAuthentication } from "@kubernetes-models/istio/security.istio.io/v1/RequestAuthentication";
import { EnvoyFilter } from "@kubernetes-models/istio/networking.istio.io/v1alpha3/EnvoyFilter";

const MODELS = [
  Service, DomainMapping, ClusterDomainClaim, PeerAuthentication, AuthorizationPolicy, RequestAuthentication, EnvoyFilter,
];

function check(doc) {
  const model = MODELS.find((m) => m.apiVersion === doc.apiVersion && m.kind === doc.kind);
  if (!model) return { kind: doc.kind, known: false, errors: [] };
  try {
    new model(doc).validate();
    return { kind: doc.kind, known: true, errors: [] };
  } catch (error) {
    const details = error.errors ?? [{ instancePath: "", message: error.message }];
    return { kind: doc.kind, known: true, errors: details.map((e) => `${e.instancePath || "/"} ${e.message}`) };
  }
}

const docs = JSON.parse(readFileSync(0, "utf8"));
process.stdout.write(JSON.stringify(docs.map(check)) + "\n");
