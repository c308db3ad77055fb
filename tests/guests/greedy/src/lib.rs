//! A hub that wants the network: std's sockets make the component import
//! `wasi:sockets`, which hubhost refuses at load, naming the import.

use hubhost_guest::{HubError, Methods, export_hub};

struct Greedy;

impl hubhost_guest::Hub for Greedy {
    fn methods(m: &mut Methods) {
        m.on("Connect", |_, (address,): (String,)| {
            std::net::TcpStream::connect(address.as_str())
                .map(|_| ())
                .map_err(|e| HubError::failed(e.to_string()))
        });
    }
}

export_hub!(Greedy);
