# Thin aliases; the real work is in scripts/ and the lab CLI.
.PHONY: test up deps bench

test:
	scripts/test.sh

up:
	go run ./lab up

deps:
	scripts/deps.sh
