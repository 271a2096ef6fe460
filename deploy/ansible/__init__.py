"""Ansible deployment of Partyline: roles, playbooks, and the inventory writer (`python -m deploy.ansible`)."""
