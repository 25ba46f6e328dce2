using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;

namespace Cairn.Api.Tests;

/// <summary>
/// What a node relays from another node's answer, written by a real Kestrel: the status, headers and body as they came,
/// and for a 204 or 304 no body write at all. Kestrel throws on any write to those, even an empty one, and a relaying
/// node whose write failed before the headers left answered 500 for a DELETE the owner had done (seen in the fault runs).
/// </summary>
public sealed class RelayedResultTests : IAsyncLifetime
{
    private WebApplication _app = null!;
    private HttpClient _http = null!;
    private readonly List<Exception> _thrown = [];

    public async ValueTask InitializeAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        _app = builder.Build();
        _app.Use(async (context, next) =>
        {
            try
            {
                await next(context);
            }
            catch (Exception e)
            {
                lock (_thrown)
                {
                    _thrown.Add(e);
                }
                throw;
            }
        });
        _app.MapGet("/relay/{status:int}", (int status) =>
            new NodeForwarder.RelayedResult(status, status == 200 ? "application/json" : null, status == 201 ? "/api/v1/volumes/v" : null,
                status is 200 or 201 ? """{"name":"v"}"""u8.ToArray() : []));
        await _app.StartAsync();
        string address = _app.Urls.First(); // the port Kestrel bound
        _http = new HttpClient { BaseAddress = new Uri(address) };
    }

    public async ValueTask DisposeAsync()
    {
        _http.Dispose();
        await _app.DisposeAsync();
    }

    [Theory]
    [InlineData(204)]
    [InlineData(304)]
    public async Task A_relayed_answer_without_a_body_is_written_without_one(int status)
    {
        using var response = await _http.GetAsync($"/relay/{status}");

        Assert.Equal((HttpStatusCode)status, response.StatusCode);
        Assert.Empty(await response.Content.ReadAsByteArrayAsync());
        Assert.Empty(_thrown);
    }

    [Fact]
    public async Task A_relayed_answer_with_a_body_keeps_its_status_type_location_and_bytes()
    {
        using var ok = await _http.GetAsync("/relay/200");
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        Assert.Equal("application/json", ok.Content.Headers.ContentType?.MediaType);
        Assert.Equal("""{"name":"v"}""", await ok.Content.ReadAsStringAsync());

        using var created = await _http.GetAsync("/relay/201");
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        Assert.Equal("/api/v1/volumes/v", created.Headers.Location?.ToString());
        Assert.Empty(_thrown);
    }
}
