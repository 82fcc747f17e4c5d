-- One database per service (same cluster); wavry-master and wavry-gateway migrate their own.
CREATE DATABASE wavry_master OWNER wavry;
CREATE DATABASE wavry_gateway OWNER wavry;
