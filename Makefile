# SKAO Staging Service. `make run` starts the service locally on an embedded
# SQLite; `make test` installs what the tests need (as root, from Debian's
# packages) and runs every test. See README.md.

GO ?= go
FUNCTIONS := stage logs jupyter

.PHONY: run test test-deps bench build vet clean reliability scale

## run: the service on http://127.0.0.1:$${PORT:-8000} with sample data under ./.data
run: build
	./scripts/run-local.sh

## build: one binary per function under ./bin
build:
	@mkdir -p bin
	$(GO) build -trimpath -o bin/ $(addprefix ./functions/,$(FUNCTIONS)) ./internal/devingress

## test: install test dependencies, then vet and run all tests (MariaDB included)
test: test-deps
	$(GO) vet ./...
	cd tools/oidcprovider && $(GO) vet ./...
	$(GO) test -count=1 -timeout 40m ./...

test-deps:
	./scripts/install-test-deps.sh

## bench: performance figures side by side with cp, as a table
bench: build
	$(GO) run ./internal/bench

## scale: a store of millions (10M operations, 50M log records in a throwaway MariaDB under .data) vs a small one, the same requests side by side; table into README.md. SCALE_FACTOR=0.1 for a tenth
SCALE_FACTOR ?= 1
scale: build
	$(GO) run ./internal/scale -factor $(SCALE_FACTOR)

## reliability: the fault, load and hostile-input suite at full size, then every fuzz target for $$FUZZTIME (30s); figures in internal/reliability/last-run.md
reliability: test-deps
	./scripts/reliability.sh

clean:
	rm -rf bin .data

# Deployment. These need a registry, and deploy/undeploy/helm-install a
# cluster; see README.md, Deploying.
KO ?= $(GO) run github.com/google/ko@v0.19.1
KO_DOCKER_REPO ?=
IMAGE_TAG ?= latest
KUBECTL ?= kubectl
HELM ?= $(if $(wildcard bin/helm),bin/helm,helm)
HELM_RELEASE ?= skao-staging-service
HELM_NAMESPACE ?= skao-staging
HELM_ARGS ?=
JUPYTERHUB_API_TOKEN ?=
DEPLOY_DIR ?= bin/deploy
IMAGE_REFS ?= $(DEPLOY_DIR)/images.txt

.PHONY: images deploy-overlay deploy undeploy helm-install cluster-test cluster-deps

## images: one image per function with ko, pushed to $$KO_DOCKER_REPO/<function>; references (with digests) in $(IMAGE_REFS)
images:
	@test -n "$(KO_DOCKER_REPO)" || { echo "set KO_DOCKER_REPO, e.g. make images KO_DOCKER_REPO=registry.example.org/skao" >&2; exit 1; }
	@mkdir -p $(dir $(IMAGE_REFS))
	KO_DOCKER_REPO=$(KO_DOCKER_REPO) $(KO) build --base-import-paths --tags $(IMAGE_TAG) --image-refs $(IMAGE_REFS) $(addprefix ./functions/,$(FUNCTIONS))

## deploy-overlay: $(DEPLOY_DIR)/kustomization.yaml, config/knative with the image digests in $(IMAGE_REFS)
deploy-overlay:
	@mkdir -p $(DEPLOY_DIR)
	./tools/knative-overlay.sh $(IMAGE_REFS) $(DEPLOY_DIR) >$(DEPLOY_DIR)/kustomization.yaml

## deploy: build and push the images, create the Secrets once, then apply config/knative with the images' digests
deploy: images deploy-overlay
	KUBECTL="$(KUBECTL)" ./tools/knative-secrets.sh
	$(KUBECTL) apply --server-side -k $(DEPLOY_DIR)

## undeploy: remove the functions, eventing (EventPolicies included) and route; claims, MySQL, secrets and namespace stay
undeploy:
	$(KUBECTL) delete --ignore-not-found $(foreach f,route eventing oidc/eventpolicy logs jupyter stage,-f config/knative/$(f).yaml)

## helm-install: build and push the images, then install or upgrade the chart with them, pinned by digest
helm-install: images
	@echo "$(HELM) upgrade --install $(HELM_RELEASE) charts/skao-staging-service --namespace $(HELM_NAMESPACE) (HELM_ARGS not shown: they may hold secrets)"
	@$(HELM) upgrade --install $(HELM_RELEASE) charts/skao-staging-service --namespace $(HELM_NAMESPACE) --create-namespace \
		$$(./tools/helm-image-args.sh $(IMAGE_REFS)) $(HELM_ARGS)

## cluster-test: install config/knative and the chart on a control plane built here (etcd, kube-apiserver, kube-controller-manager, Knative Serving's webhook and controller) and check what it makes of them
cluster-test: test-deps cluster-deps
	$(GO) vet -tags cluster ./internal/clustertest
	$(GO) test -tags cluster -count=1 -timeout 30m -v ./internal/clustertest

cluster-deps:
	./scripts/install-cluster-deps.sh
