# Debian packages (debian/): built from the tree, installed, used outside the
# tree and removed again by packaging/smoke-test.sh; and the one list of
# build dependencies (debian/control's Build-Depends, read by the Makefile).
#
#   make test-packages   the smoke test (about 10 s)
#   make packages        the .deb files into build/packages/

.PHONY: test-packages test-deps packages
test-packages: $(DEPS_STAMP)
	packaging/smoke-test.sh .
TEST_TARGETS += test-packages

# No fragment keeps a package list of its own.
test-deps:
	bad=$$(grep -ln '^DEB_PACKAGES *+\?=' */*.mk c/*.mk 2>/dev/null | grep -v '^Makefile$$' || true); \
	[ -z "$$bad" ] || { echo "DEB_PACKAGES set outside the Makefile (use debian/control): $$bad"; exit 1; }; \
	[ -n "$(DEB_PACKAGES)" ] || { echo "no Build-Depends read from debian/control"; exit 1; }; \
	echo "deps: $(words $(DEB_PACKAGES)) packages, all from debian/control's Build-Depends: 1 passed, 0 failed"
TEST_TARGETS += test-deps

packages: $(DEPS_STAMP)
	rm -rf $(BUILD)/packages; mkdir -p $(BUILD)/packages/src/chan
	git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t $(BUILD)/packages/src/chan
	cd $(BUILD)/packages/src/chan && dpkg-buildpackage -us -uc -b >../build.log 2>&1
	mv $(BUILD)/packages/src/*.deb $(BUILD)/packages/
	ls $(BUILD)/packages/*.deb
