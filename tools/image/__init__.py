"""The container images built and started for real, without a Docker engine: a stand-in
base from Debian's packages (standin), buildah builds through this machine's package index
(build), and the built image's root file system started as its user (rootfs)."""
