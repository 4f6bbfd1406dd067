# Fleet test hosts (tests/fleet/fleet.py): booted Debian machines with systemd and sshd, simulated GPUs.
# Included by the Makefile. Needs root; installs systemd-container and debootstrap when missing.
FLEET := cd $(ROOT) && PATH=$(VENV)/bin:$$PATH $(VENV)/bin/python tests/fleet/fleet.py

.PHONY: fleet-up fleet-down fleet-test fleet-status molecule

fleet-up: venv
	@$(FLEET) up $(if $(FLEET_HOSTS),--hosts $(FLEET_HOSTS)) $(if $(FLEET_LIKE),--like $(FLEET_LIKE))

fleet-down:
	@test -x $(VENV)/bin/python || exit 0; $(FLEET) down

fleet-status: venv
	@$(FLEET) status

# boots the hosts, runs playbooks/site.yml twice over SSH and the checks in tests/fleet_checks,
# reboots the hosts marked reboot: true, checks again, tears down (always, also on failure)
fleet-test: venv
	@echo "== fleet test: booted hosts, site.yml over SSH, reboot"
	@$(FLEET) test
	@$(MAKE) --no-print-directory molecule

# Molecule scenarios of the roles (extensions/molecule/<scenario>), each on its own fleet hosts:
# create/destroy call the harness, converge/idempotence/verify run over SSH
molecule: venv
	@echo "== molecule scenarios on fleet test hosts"
	cd $(ROOT) && PATH=$(VENV)/bin:$$PATH NO_COLOR=1 ANSIBLE_NOCOLOR=1 molecule test --all
