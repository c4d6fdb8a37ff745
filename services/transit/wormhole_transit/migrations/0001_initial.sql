-- Transit relay usage records (docs/transit-protocol.md §9.4), prefixed so they can share a
-- database with the mailbox.

CREATE TABLE transit_usage (
    id           bigserial        PRIMARY KEY,
    started      double precision NOT NULL,
    total_time   double precision NOT NULL,
    waiting_time double precision,
    total_bytes  bigint           NOT NULL,
    result       text             NOT NULL
);
CREATE INDEX transit_usage_started ON transit_usage (started);
CREATE INDEX transit_usage_result ON transit_usage (result);

-- One row per relay process (several may share the database), replaced on every refresh.
CREATE TABLE transit_current (
    server_id        text             PRIMARY KEY,
    rebooted         double precision NOT NULL,
    updated          double precision NOT NULL,
    connected        integer          NOT NULL,
    waiting          integer          NOT NULL,
    incomplete_bytes bigint           NOT NULL
);
