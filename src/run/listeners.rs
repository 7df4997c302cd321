//! Binding every listener before serving, so a busy port fails start-up at once.

use tokio::net::TcpListener;

use super::error::{BindTarget, StartError};
use crate::config::Settings;
use crate::proxy::listener::{self, Listener};

/// Every bound listener: one per route, in `Settings::routes` order, and the admin one.
pub struct Listeners {
    pub routes: Vec<Listener>,
    pub admin: Option<TcpListener>,
}

impl Listeners {
    pub async fn bind(settings: &Settings) -> Result<Listeners, StartError> {
        Self::bind_routes(Vec::new(), settings).await
    }

    /// Uses `first` for the first route and binds the rest.
    pub async fn bind_after(first: Listener, settings: &Settings) -> Result<Listeners, StartError> {
        Self::bind_routes(vec![first], settings).await
    }

    async fn bind_routes(
        mut routes: Vec<Listener>,
        settings: &Settings,
    ) -> Result<Listeners, StartError> {
        for route in settings.routes.iter().skip(routes.len()) {
            let listener = listener::bind(&route.listen, route.socket_mode)
                .await
                .map_err(|error| StartError::Bind {
                    what: BindTarget::Route(route.name.clone()),
                    addr: route.listen.to_string(),
                    error,
                })?;
            routes.push(listener);
        }
        let admin = match settings.process.admin_listen {
            Some(addr) => {
                Some(
                    TcpListener::bind(addr)
                        .await
                        .map_err(|error| StartError::Bind {
                            what: BindTarget::Admin,
                            addr: addr.to_string(),
                            error,
                        })?,
                )
            }
            None => None,
        };
        Ok(Listeners { routes, admin })
    }
}
